"""Exponential moving average of the trained parameters (kept in float32 on their device)."""

from __future__ import annotations

import torch


class EMA:
    """shadow <- decay * shadow + (1 - decay) * param, over the named trainable parameters."""

    def __init__(self, named_params: dict[str, torch.nn.Parameter], decay: float) -> None:
        self.decay = decay
        self.params = named_params
        self.shadow = {k: p.detach().float().clone() for k, p in named_params.items()}

    @torch.no_grad()
    def update(self) -> None:
        for k, p in self.params.items():
            self.shadow[k].lerp_(p.detach().float(), 1.0 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for k, v in state.items():
            if k in self.shadow:
                self.shadow[k].copy_(v)

    @torch.no_grad()
    def swap(self) -> None:
        """Exchange live and EMA weights (call twice to undo)."""
        for k, p in self.params.items():
            live = p.detach().float().clone()
            p.copy_(self.shadow[k].to(p.dtype))
            self.shadow[k].copy_(live)
