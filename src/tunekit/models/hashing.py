"""A stable fingerprint of a model checkpoint's files, for content-addressed cache keys.

Two checkpoints with the same weights, configs and tokenizer files get the same fingerprint
wherever they live; any change to those files changes it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from tunekit.hashing import file_sha256_memo
from tunekit.errors import ConfigError

# Files that do not change what a model computes.
_IGNORED_NAMES = {"README.md", "LICENSE", "LICENSE.txt", "NOTICE", "USE_POLICY.md"}
_IGNORED_SUFFIXES = {".md", ".lock", ".tmp", ".png", ".jpg"}

# (resolved path, size, mtime_ns, inode) -> sha256 of the contents; saves re-reading large weights.


def model_fingerprint(path_or_id: str | os.PathLike[str]) -> str:
    """sha256 (hex) over the relative names and contents of a checkpoint's files.

    `path_or_id` is a local checkpoint folder or file, a Hugging Face Hub id (fingerprints the files
    of its snapshot in the local cache: call it after the model has been loaded), a Demucs model
    name (its bag and model files in the local Hugging Face cache) or `torchvggish`. For `models=tiny`
    pass the resolved path: `model_fingerprint(resolve(model_id, tiny=True))`.
    """
    path = Path(path_or_id).expanduser()
    if path.exists():
        return _fingerprint_files(path, _checkpoint_files(path))
    name = str(path_or_id)
    from tunekit.models.registry import find_spec

    spec = find_spec(name)
    if spec is not None and spec.family == "demucs":
        from tunekit.models.demucs import demucs_files

        files = demucs_files(name)
        return _fingerprint_files(files[0].parent, files)
    if spec is not None and spec.family == "vggish":
        from tunekit.models.vggish import resolve_vggish

        folder = resolve_vggish(name)
        return _fingerprint_files(folder, _checkpoint_files(folder))
    folder = _hub_snapshot(name)
    return _fingerprint_files(folder, _checkpoint_files(folder))


def _checkpoint_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = []
    for root, dirs, names in os.walk(path, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for n in sorted(names):
            if n.startswith(".") or n in _IGNORED_NAMES or Path(n).suffix.lower() in _IGNORED_SUFFIXES:
                continue
            files.append(Path(root) / n)
    if not files:
        raise ConfigError(f"cannot fingerprint model folder {str(path)!r}: it holds no checkpoint files")
    return files


def _fingerprint_files(root: Path, files: list[Path]) -> str:
    base = root if root.is_dir() else root.parent
    total = hashlib.sha256()
    for f in sorted(files, key=lambda p: p.relative_to(base).as_posix()):
        total.update(f.relative_to(base).as_posix().encode() + b"\0" + file_digest(f).encode() + b"\n")
    return total.hexdigest()


def file_digest(path: Path) -> str:
    """Content id of one file: the Hugging Face cache's blob name (already a content hash) when the
    file links into a `blobs/` folder, else the sha256 of its bytes (memoised per size and mtime)."""
    if path.is_symlink():
        target = path.resolve()
        if target.parent.name == "blobs":
            return target.name
    return file_sha256_memo(path)


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
