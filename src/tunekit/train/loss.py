"""Shared training math for codebook language models: the delay pattern, the masked cross-entropy and
the normalisation that makes gradient accumulation equal to one large batch.

Delay pattern (MusicGen): codebook k is shifted right by d_k steps (d_k = k for mono; stereo models
interleave left/right codebooks and shift each pair by k // 2). For T frames the targets have
S = T + max(d) steps; step s of codebook k holds frame s - d_k. The decoder input is the targets
shifted right by one with the start token in front, exactly as transformers builds it from `labels`
(`shift_tokens_right`), so position s predicts target s. Targets outside [0, n_valid) (the delay
corners and a short window's padding) are masked: never trained on, never counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def codebook_delays(n_codebooks: int, audio_channels: int = 1) -> list[int]:
    """Per-codebook delays: [0, 1, 2, 3] for mono, [0, 0, 1, 1, 2, 2, 3, 3] for interleaved stereo."""
    if audio_channels == 2:
        return [k // 2 for k in range(n_codebooks)]
    return list(range(n_codebooks))


@dataclass
class DelayedBatch:
    """Decoder inputs, targets and the loss mask of a batch, all (B, K, S)."""

    inputs: torch.Tensor  # int64: start token, then targets shifted right (masked targets -> pad token)
    targets: torch.Tensor  # int64: delayed codes; masked positions hold the pad token
    mask: torch.Tensor  # bool: True where a real code is predicted

    @property
    def n_tokens(self) -> int:
        """Number of unmasked target tokens."""
        return int(self.mask.sum())

    def hf_labels(self) -> torch.Tensor:
        """The same targets as transformers' `labels`: (B, S, K) with -100 where masked."""
        return self.targets.masked_fill(~self.mask, -100).transpose(1, 2).contiguous()


def build_delayed(
    codes: torch.Tensor, n_frames: torch.Tensor, delays: list[int], pad_id: int, start_id: int
) -> DelayedBatch:
    """Delay-pattern inputs/targets/mask for codes (B, K, T) whose first n_frames[b] frames are valid."""
    b, k, t = codes.shape
    if len(delays) != k:
        raise ValueError(f"{len(delays)} delays for {k} codebooks")
    steps = t + max(delays)
    device = codes.device
    s = torch.arange(steps, device=device)
    d = torch.as_tensor(delays, device=device)
    frame = s[None, :] - d[:, None]  # (K, S): which frame each step holds
    valid = (frame[None] >= 0) & (frame[None] < n_frames.to(device)[:, None, None])  # (B, K, S)
    gather = frame.clamp(0, t - 1)[None].expand(b, k, steps)
    targets = torch.gather(codes, 2, gather)
    targets = torch.where(valid, targets, torch.full_like(targets, pad_id))
    inputs = torch.empty_like(targets)
    inputs[..., 0] = start_id
    inputs[..., 1:] = targets[..., :-1]
    return DelayedBatch(inputs=inputs, targets=targets, mask=valid)


def undelay(delayed: torch.Tensor, delays: list[int], n_frames: int) -> torch.Tensor:
    """Codes (B, K, n_frames) from delayed steps (B, K, S) with S >= n_frames + max(delays)."""
    return torch.stack([delayed[:, k, d : d + n_frames] for k, d in enumerate(delays)], dim=1)


def masked_ce_sum(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of cross-entropy over unmasked targets, computed in float32.

    logits (B, K, S, V); targets and mask (B, K, S). Summing (not averaging) lets the caller divide
    by the token count of the whole accumulated batch.
    """
    labels = targets.masked_fill(~mask, -100)
    return torch.nn.functional.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="sum"
    )


def loss_scale(total_tokens: int, world_size: int = 1) -> float:
    """Factor turning a micro-batch's loss *sum* into its share of the global-batch mean.

    Each micro-batch contributes sum_i / N with N the unmasked tokens of all micro-batches on all
    ranks; DDP averages gradients over ranks, so the factor is world_size / N. Gradients then equal
    those of one batch holding every window, whatever the split into micro-batches.
    """
    if total_tokens <= 0:
        return 0.0
    return world_size / float(total_tokens)
