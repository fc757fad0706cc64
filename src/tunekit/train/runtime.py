"""Process-level plumbing every trainer shares: the Accelerator (device, precision, DDP/FSDP), reductions
across ranks, seeding, and the run folder (config record, resume compatibility)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np

from tunekit.errors import ConfigError

# Keys that change what a resumed run computes; changing them between runs of one out= is refused.
TRAJECTORY_KEYS = (
    "model.name",
    "method",
    "data.path",
    "data.crop_seconds",
    "data.min_seconds",
    "data.train_split",
    "data.caption_variants",
    "trainer.batch_size",
    "trainer.seed",
    "trainer.cond_dropout",
    "flow",
    "models.tiny",
)
_ABSENT = object()  # what OmegaConf.select gives for a key a saved config does not have


def make_accelerator(trainer: Any) -> tuple[Any, str]:
    """An Accelerator for `trainer.device`/`trainer.precision`; returns it with the precision in use."""
    import torch
    from accelerate import Accelerator

    cpu = trainer.device == "cpu"
    if trainer.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("trainer.device=cuda but no CUDA GPU is available; use trainer.device=auto or cpu",
                          key="trainer.device")
    on_cuda = torch.cuda.is_available() and not cpu and trainer.device != "mps"
    precision = trainer.precision
    if precision == "auto":
        precision = "bf16" if on_cuda and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "fp16" and not on_cuda:
        raise ConfigError("trainer.precision=fp16 needs a CUDA GPU (use bf16 or fp32 here)", key="trainer.precision")
    mixed = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[precision]
    acc = Accelerator(cpu=cpu, mixed_precision=mixed, gradient_accumulation_steps=1,
                      step_scheduler_with_optimizer=False)
    return acc, precision


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def reduce_sum(acc: Any, value: float) -> float:
    """Sum a number over all ranks (identity on one process)."""
    if acc.num_processes == 1:
        return float(value)
    import torch

    t = torch.tensor([float(value)], device=acc.device, dtype=torch.float64)
    return float(acc.reduce(t, reduction="sum").item())


def _select(cfg: Any, key: str) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.select(cfg, key)


def prepare_run_dir(cfg: Any, has_checkpoint: bool, write: bool = True) -> None:
    """Refuse to mix an existing run with different trajectory keys; then (if `write`) record the config in
    `<out>/config.yaml`."""
    from omegaconf import OmegaConf

    from tunekit.atomic import write_text

    run = Path(cfg.out).expanduser()
    saved = run / "config.yaml"
    if has_checkpoint and not cfg.resume:
        raise ConfigError(
            f"out={run} already holds a run with checkpoints; choose a new out= (or set resume=true to continue it)",
            key="out",
        )
    if has_checkpoint and saved.is_file():
        old = OmegaConf.load(saved)
        changed = []
        for key in TRAJECTORY_KEYS:
            if OmegaConf.select(old, key, default=_ABSENT) is _ABSENT:  # a key newer than that run's config
                continue
            a, b = _select(old, key), _select(cfg, key)
            a = OmegaConf.to_container(a) if OmegaConf.is_config(a) else a
            b = OmegaConf.to_container(b) if OmegaConf.is_config(b) else b
            if a != b:
                changed.append(f"{key}: {a!r} -> {b!r}")
        if changed:
            raise ConfigError(
                f"out={run} holds a run with different settings ({'; '.join(changed)}); resuming would not continue "
                "that run: use a new out=, or restore those values",
                key="out",
            )
    if write:
        run.mkdir(parents=True, exist_ok=True)
        write_text(saved, OmegaConf.to_yaml(cfg, resolve=True))
