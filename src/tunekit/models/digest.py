"""A stable digest of a model checkpoint's files, for content-addressed cache keys, by path or by id.

Two checkpoints with the same weights, configs and tokenizer files get the same digest
wherever they live; any change to those files changes it (`tunekit.file_digest.folder_digest`).
This module finds the files of a model named by id: a Hub snapshot, a Demucs bag, torchvggish.
"""

from __future__ import annotations

import os
from pathlib import Path

from tunekit.errors import ConfigError
from tunekit.file_digest import files_digest, folder_digest


def model_digest(path_or_id: str | os.PathLike[str]) -> str:
    """sha256 (hex) over the relative names and contents of a checkpoint's files.

    `path_or_id` is a local checkpoint folder or file, a Hugging Face Hub id (digests the files
    of its snapshot in the local cache: call it after the model has been loaded), a Demucs model
    name (its bag and model files in the local Hugging Face cache) or `torchvggish`. For `models=tiny`
    pass the resolved path: `model_digest(resolve(model_id, tiny=True))`.
    """
    path = Path(path_or_id).expanduser()
    if path.exists():
        return folder_digest(path)
    name = str(path_or_id)
    from tunekit.models.registry import find_spec

    spec = find_spec(name)
    if spec is not None and spec.loader == "demucs":
        from tunekit.models.demucs import demucs_files

        files = demucs_files(name)
        return files_digest(files[0].parent, files)
    if spec is not None and spec.loader == "vggish":
        from tunekit.models.vggish import resolve_vggish

        return folder_digest(resolve_vggish(name))
    return folder_digest(_hub_snapshot(name))


def _hub_snapshot(model_id: str) -> Path:
    """The local snapshot folder of a Hub id (no download: the model must have been loaded once)."""
    from huggingface_hub import snapshot_download

    from tunekit.models.hub import loading

    with loading(model_id):
        try:
            return Path(snapshot_download(model_id, local_files_only=True))
        except ValueError as exc:  # not a valid repository id
            raise ConfigError(f"cannot fingerprint {model_id!r}: it is neither an existing local path nor a "
                              f"Hugging Face Hub id ({exc})") from exc
