"""AdamW with linear warmup and a cosine (or constant) schedule."""

from __future__ import annotations

import math
from typing import Any


def warmup_steps(warmup: float, max_steps: int) -> int:
    """`warmup` < 1 is a fraction of max_steps, otherwise a number of steps."""
    return int(round(warmup * max_steps)) if warmup < 1 else int(warmup)


def lr_factor(step: int, max_steps: int, warmup: int, schedule: str, min_ratio: float) -> float:
    """Multiplier of the peak lr at `step` (0-based step about to be taken)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, max_steps - warmup)
    progress = min(max(progress, 0.0), 1.0)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_optimizer(groups: list[dict[str, Any]], trainer: Any, device_type: str) -> tuple[Any, Any]:
    """AdamW(groups) and a LambdaLR implementing the warmup + schedule of `trainer`."""
    import torch

    fused = device_type == "cuda"
    opt = torch.optim.AdamW(groups, lr=trainer.lr, betas=tuple(trainer.betas), eps=1e-8, fused=fused or None)
    warm = warmup_steps(trainer.warmup, trainer.max_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, trainer.max_steps, warm, trainer.schedule, trainer.min_lr_ratio)
    )
    return opt, sched
