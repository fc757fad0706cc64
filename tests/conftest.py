"""Test-wide settings: offline, tiny-model cache in a session temp dir, W&B offline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if "TUNEKIT_CACHE" not in os.environ:
        cache = Path(config.rootpath) / ".pytest_cache" / "tunekit-cache"
        cache.mkdir(parents=True, exist_ok=True)
        os.environ["TUNEKIT_CACHE"] = str(cache)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root."""
    return REPO


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch intra-op thread: on two shared cores tiny models run faster than with two contended
    threads, and float results repeat exactly from run to run. Restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
