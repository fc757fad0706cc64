"""Flow-matching training math (ACE-Step 1.5), in one place: the noisy input and target, the summed loss,
the timestep samplers and condition dropout.

Convention (t = 1 is noise, t = 0 data): x_t = t·ε + (1 − t)·x0, the model predicts the velocity
v = ε − x0, and the loss is the squared error summed over every latent element (the shared loop divides by
the element count, `Trainable.count`). ACE-Step's DiT also takes a second time r; plain flow matching sets
r = t, as the pipeline does at inference.

Every random draw of a training sample (the noise ε and the time t) comes from a generator seeded by the
sample's key (run seed, stream, sample index), never from the global generator: a sample's draw does not
depend on the batch it lands in, the rank that computes it, or whether the run was resumed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

TRAIN_STREAM, VALID_STREAM = 0, 1  # draws for training samples and for validation positions never coincide


def shifted_schedule(steps: int, shift: float) -> torch.Tensor:
    """The sampler's times (float64): linspace(1, 0, steps + 1) shifted by t' = shift·t / (1 + (shift − 1)·t),
    the final 0 dropped, as AceStepPipeline schedules them."""
    t = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    return (shift * t / (1 + (shift - 1) * t))[:-1]


def turbo_table() -> torch.Tensor:
    """The turbo checkpoints' times: the schedule of the turbo variant's inference defaults (8 steps, shift 3)."""
    from tunekit.models.acestep import INFERENCE_DEFAULTS

    turbo = INFERENCE_DEFAULTS["turbo"]
    return shifted_schedule(turbo.steps, turbo.shift)


@dataclass(frozen=True)
class TimestepSampler:
    """Draws training times t ∈ [0, 1].

    turbo: uniform over `turbo_table()`, the times a guidance-distilled turbo checkpoint is sampled at.
    logit_normal: sigmoid(N(logit_mean, logit_std²)), spread over (0, 1) for base and sft checkpoints,
    which are sampled at any time (the mean −0.4 leans towards the data end).
    """

    kind: str  # turbo | logit_normal
    logit_mean: float = -0.4
    logit_std: float = 1.0

    def __call__(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """`n` times, float32."""
        if self.kind == "turbo":
            table = turbo_table().float()
            return table[torch.randint(len(table), (n,), generator=generator)]
        if self.kind == "logit_normal":
            z = torch.randn(n, generator=generator, dtype=torch.float64)
            return torch.sigmoid(self.logit_mean + self.logit_std * z).float()
        raise ValueError(f"unknown timestep sampler {self.kind!r}; use turbo or logit_normal")


def resolve_timesteps(setting: str, variant: str) -> str:
    """`flow.timesteps` with `auto` resolved: the turbo table for turbo checkpoints, logit-normal otherwise."""
    if setting != "auto":
        return setting
    return "turbo" if variant == "turbo" else "logit_normal"


def sample_generator(seed: int, stream: int, index: int) -> torch.Generator:
    """A CPU generator for one sample's draws, seeded by (run seed, stream, sample index)."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(stream), int(index)]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def draw_noise_and_times(keys: Sequence[int], shape: Sequence[int], sampler: TimestepSampler, *, seed: int,
                         stream: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ε (B, *shape), t (B,)) on the CPU, float32: for each sample key, noise then time from its own generator."""
    noise, times = [], []
    for key in keys:
        g = sample_generator(seed, stream, int(key))
        noise.append(torch.randn(tuple(shape), generator=g))
        times.append(sampler(1, g))
    return torch.stack(noise), torch.cat(times)


def noisy_latents(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = t·ε + (1 − t)·x0, with t (B,) broadcast over each sample's (T, C)."""
    tt = t.reshape(-1, *([1] * (x0.ndim - 1))).to(x0.dtype)
    return tt * noise + (1 - tt) * x0


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """What the model predicts at every t: the velocity ε − x0."""
    return noise - x0


def flow_loss_sum(predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x0: torch.Tensor,
                  noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Σ (v̂ − (ε − x0))² over every element of the batch, in float32, with v̂ = predict(x_t, t)."""
    v = predict(noisy_latents(x0, noise, t), t)
    return ((v.float() - velocity_target(x0, noise).float()) ** 2).sum()


def drop_conditions(cond: torch.Tensor, drop: torch.Tensor, null: torch.Tensor) -> torch.Tensor:
    """`cond` (B, L, H) with each dropped item's states replaced by the null condition (1, 1, H) broadcast to
    its (L, H), exactly what the pipeline feeds the DiT as the unconditional half of guidance."""
    null = null.to(device=cond.device, dtype=cond.dtype).expand_as(cond)
    return torch.where(drop.to(cond.device).reshape(-1, 1, 1), null, cond)
