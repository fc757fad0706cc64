"""Hub ids and local paths: which is which, and "weights not found" failures of the Hugging Face loaders
turned into one clear tunekit error."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from tunekit.errors import ConfigError, StageUnavailableError, TunekitError


def is_local_path(name_or_path: str | Path) -> bool:
    """True when `name_or_path` names something on disk (it exists, or is written as a path)."""
    text = str(name_or_path)
    if Path(text).expanduser().exists():
        return True
    return text.startswith(("/", "./", "../", "~")) or text.count("/") > 1 or "\\" in text


class WeightsNotFoundError(StageUnavailableError):
    """A pretrained model's files are neither local nor downloadable (offline, gated, or misspelt)."""


def offline() -> bool:
    """True when the Hugging Face libraries are in offline mode (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def weights_not_found(model_id: str, exc: BaseException, hub_repo: str | None = None) -> TunekitError:
    """The error for a model whose files could not be found; says how to fix it."""
    if is_local_path(model_id):
        problem = "could not be loaded" if Path(model_id).expanduser().exists() else "does not exist"
        return ConfigError(
            f"model folder {model_id!r} {problem} ({_first_line(exc)}); point the model setting at a "
            "checkpoint folder (config.json + weights), or use a Hub id"
        )
    repo = hub_repo or model_id
    where = (
        "offline (HF_HUB_OFFLINE is set) and they are not in the local Hugging Face cache"
        if offline()
        else "they are not in the local Hugging Face cache and could not be downloaded"
    )
    return WeightsNotFoundError(
        f"weights for model {model_id!r} could not be found: {where}. Fix: download them once while online "
        f"(`hf download {repo}`, after `hf auth login` if the repository is gated), or pass a local folder "
        f"with the checkpoint instead of the id, or run with models=tiny to use a tiny random model of the "
        f"same class (for tests and dry runs). Cause: {_first_line(exc)}"
    )


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' own progress bars ("Loading weights", "Writing model shards") inside the block.

    They break tunekit's progress display and say nothing a user needs. Download progress is huggingface_hub's
    and stays visible.
    """
    from transformers.utils import logging as hf_logging

    def empty(factory: object, args: tuple, kwargs: dict) -> object:
        return hf_logging.EmptyTqdm(*args, **kwargs)

    previous = hf_logging.set_tqdm_hook(empty)
    try:
        yield
    finally:
        hf_logging.set_tqdm_hook(previous)


@contextlib.contextmanager
def loading(model_id: str, hub_repo: str | None = None) -> Iterator[None]:
    """Run a `from_pretrained` block quietly; a missing-files OSError becomes `weights_not_found(...)`."""
    try:
        with quiet_transformers():
            yield
    except TunekitError:
        raise
    except OSError as exc:  # transformers and huggingface_hub raise OSError subclasses for missing files
        raise weights_not_found(model_id, exc, hub_repo) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
