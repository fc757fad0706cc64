"""Which torch device a model runs on, from a `device` setting (auto | cpu | cuda | cuda:N | mps)."""

from __future__ import annotations

from tunekit.errors import ConfigError


def resolve_device(device: str, *, key: str | None = None) -> str:
    """`auto` → `cuda` when a GPU is visible, else `cpu`; anything else is returned unchanged.

    With `key` (the config key that set it), `cuda` on a machine without a CUDA GPU is a ConfigError naming it.
    """
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and key is not None:
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"{key}=cuda but no CUDA GPU is available; use {key}=cpu", key=key)
    return device
