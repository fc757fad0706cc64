"""Pre-flight: check the data against the model, estimate memory, and print what will run, before any work.

Every problem found is reported at once, each naming the key to change.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from tunekit.data.latents import LatentSet
from tunekit.data.tokens import TokenSet


@dataclass
class ModelShape:
    """What pre-flight needs to know about the model."""

    n_codebooks: int  # token streams the decoder predicts
    frame_rate: float  # codec frames per second
    vocab_size: int  # codebook size
    max_positions: int  # decoder positions (delay steps + any prepended conditioning)
    prefix: int  # positions taken by prepended conditions (melody models), else 0
    hidden: int  # decoder width
    layers: int  # decoder layers
    ffn: int  # decoder feed-forward width
    max_delay: int  # largest codebook delay


def select_rows(tokens: TokenSet, cfg: Any, shape: ModelShape) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(train rows, validation rows, problems) after checking the data against the model and the config."""
    d, t = cfg.data, cfg.trainer
    problems: list[str] = []
    info = tokens.info
    if info.n_streams != shape.n_codebooks:
        fix = (
            "stereo models need stereo tokens: run `tunekit prep` with tokens.stereo=true"
            if info.n_streams * 2 == shape.n_codebooks
            else "mono models need mono tokens: run `tunekit prep` with tokens.stereo=false"
            if info.n_streams == shape.n_codebooks * 2
            else "tokenise with this model's codec"
        )
        problems.append(
            f"data.path: tokens have {info.n_streams} streams ({info.codec}) but {cfg.model.name} predicts "
            f"{shape.n_codebooks} codebooks; {fix}, or pick a matching model.name"
        )
    if abs(info.frame_rate - shape.frame_rate) > 1e-6:
        problems.append(
            f"data.path: tokens are at {info.frame_rate:g} frames/s but {cfg.model.name}'s codec runs at "
            f"{shape.frame_rate:g}; re-tokenise with the model's codec"
        )
    pipeline = tokens.pipeline()
    if d.pipeline and pipeline and pipeline != d.pipeline:
        problems.append(
            f"data.pipeline: this recipe expects data prepared with pipeline={d.pipeline}, but {tokens.root} was "
            f"prepared with pipeline={pipeline}; run `tunekit prep pipeline={d.pipeline}` or set data.pipeline=null"
        )
    crop = crop_frames(cfg, shape)
    needed = crop + shape.max_delay + shape.prefix
    if needed > shape.max_positions:
        most = (shape.max_positions - shape.max_delay - shape.prefix) / shape.frame_rate
        problems.append(
            f"data.crop_seconds: {d.crop_seconds:g} s needs {needed} decoder positions but {cfg.model.name} has "
            f"{shape.max_positions}; use at most {most:.2f}"
        )
    min_frames = max(1, int(math.ceil(d.min_seconds * shape.frame_rate)))
    long_enough = tokens.frames >= min_frames
    train = tokens.indices(d.train_split)
    train = train[long_enough[train]]
    valid = tokens.indices(d.valid_split)
    valid = valid[long_enough[valid]]
    splits = sorted(set(tokens.split))
    if len(train) == 0:
        problems.append(
            f"data.train_split: no windows of at least {d.min_seconds:g} s in split '{d.train_split}' of "
            f"{tokens.root} (splits there: {', '.join(splits) or 'none'})"
        )
    if t.eval_every > 0 and len(valid) == 0:
        problems.append(
            f"data.valid_split: no held-out windows in split '{d.valid_split}' of {tokens.root} (splits there: "
            f"{', '.join(splits) or 'none'}); re-run `tunekit prep` with a validation split, or set "
            "trainer.eval_every=0 to train without validation"
        )
    overlap = tokens.tracks(d.train_split) & tokens.tracks(d.valid_split) if len(valid) else set()
    if overlap:
        problems.append(f"data.valid_split: {len(overlap)} tracks are in both splits; re-run `tunekit prep`")
    if not problems:
        problems += [f"data.path: {p}" for p in tokens.check_files(np.concatenate([train, valid]), shape.vocab_size)]
    return train, valid, problems


def select_latent_rows(latents: LatentSet, cfg: Any, *, channels: int, hidden: int, variant: str
                       ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(train rows, validation rows, problems) of latent windows (ACE-Step), checked against the DiT: the latent
    channels and condition width it takes, and the checkpoint variant whose condition encoder made the data."""
    from tunekit.data.latents import LengthBuckets

    d, t, info = cfg.data, cfg.trainer, latents.info
    problems: list[str] = []
    redo = f"run `tunekit prep pipeline=acestep latents.model={cfg.model.name}` into a new out="
    if info.channels != channels or info.hidden != hidden:
        problems.append(f"data.path: the latents have {info.channels} channels and conditions of width {info.hidden} "
                        f"({info.model}) but {cfg.model.name}'s DiT takes {channels} and {hidden}; {redo}")
    elif info.variant != variant:
        problems.append(f"data.path: the conditions were made by the {info.variant} checkpoint {info.model}, whose "
                        f"condition encoder differs from the {variant} checkpoint {cfg.model.name}; {redo}, or pick a "
                        f"{info.variant} model.name")
    pipeline = latents.pipeline()
    if d.pipeline and pipeline and pipeline != d.pipeline:
        problems.append(
            f"data.pipeline: this recipe expects data prepared with pipeline={d.pipeline}, but {latents.root} was "
            f"prepared with pipeline={pipeline}; run `tunekit prep pipeline={d.pipeline}` or set data.pipeline=null"
        )
    long_enough = latents.frames >= max(1, int(math.ceil(d.min_seconds * info.frame_rate)))
    train, valid = latents.indices(d.train_split), latents.indices(d.valid_split)
    train, valid = train[long_enough[train]], valid[long_enough[valid]]
    splits = ", ".join(sorted(set(latents.split))) or "none"
    if len(train) == 0:
        problems.append(f"data.train_split: no windows of at least {d.min_seconds:g} s in split '{d.train_split}' "
                        f"of {latents.root} (splits there: {splits})")
    elif LengthBuckets([latents.shape(int(r)) for r in train], t.batch_size, t.seed).per_epoch == 0:
        problems.append(f"trainer.batch_size: no {t.batch_size} training windows share one length (latent frames "
                        "and condition tokens), and batches are never padded (the DiT takes no attention mask); "
                        "set trainer.batch_size=1 and raise trainer.grad_accum")
    if t.eval_every > 0 and len(valid) == 0:
        problems.append(
            f"data.valid_split: no held-out windows in split '{d.valid_split}' of {latents.root} (splits there: "
            f"{splits}); re-run `tunekit prep` with a validation split, or set trainer.eval_every=0"
        )
    if len(valid) and latents.tracks(d.train_split) & latents.tracks(d.valid_split):
        problems.append("data.valid_split: some tracks are in both splits; re-run `tunekit prep`")
    if not problems:
        problems += [f"data.path: {p}" for p in latents.check_files(np.concatenate([train, valid]))]
    return train, valid, problems


def dit_memory(cfg: Any, *, hidden: int, layers: int, ffn: int, tokens: int, cond_tokens: int, trainable: int,
               on_device: int, precision: str, device: Any) -> dict[str, float]:
    """`estimate_memory` for a DiT (ACE-Step) training step: `tokens` patches per window attending to
    `cond_tokens` condition states, no output vocabulary."""
    from tunekit.train.methods import build_method

    t, m = cfg.trainer, cfg.method
    shape = ModelShape(n_codebooks=0, frame_rate=0.0, vocab_size=0, max_positions=tokens, prefix=0, hidden=hidden,
                       layers=layers, ffn=ffn, max_delay=0)
    kind = getattr(device, "type", str(device))
    lora = not build_method(m).full
    return estimate_memory(
        shape, params_on_device=on_device, trainable=trainable, batch=t.batch_size, seq=tokens, text_len=cond_tokens,
        mixed=precision != "fp32", checkpointing=cfg.model.gradient_checkpointing, ema=t.ema_decay > 0,
        ffn_trained=not lora or m.targets != "attention",
        lora_inputs=lora_dropout_inputs(shape, m.targets) if lora and m.dropout > 0 else 0,
        host=kind == "cpu", overhead_gib=1.0 if kind == "cuda" else 0.5,
    )


def show_plan(rows: list[tuple[str, str]], show: bool = True) -> None:
    """Print the pre-flight summary (on the main process)."""
    if show:
        print("tunekit train: pre-flight\n" + format_plan(rows), flush=True)


def crop_frames(cfg: Any, shape: ModelShape) -> int:
    """Training crop in frames."""
    return max(1, int(round(cfg.data.crop_seconds * shape.frame_rate)))


def lora_dropout_inputs(shape: ModelShape, targets: str) -> int:
    """Input features per token, summed over the model, of the linears a LoRA `targets` preset wraps.

    Each wrapped linear applies its own dropout to its input, and the dropped copy (with its mask) is saved for
    the backward pass: self-attention q/k/v/out and cross-attention q/out read hidden-wide inputs (cross k/v
    read the short text), fc1 reads `hidden`, fc2 reads `ffn`, and each output head reads `hidden`.
    """
    h = shape.hidden
    per_layer = 6 * h + (h + shape.ffn if targets in ("attention_ffn", "all") else 0)
    heads = shape.n_codebooks * h if targets == "all" else 0
    return shape.layers * per_layer + heads


def estimate_memory(
    shape: ModelShape,
    *,
    params_on_device: int,
    trainable: int,
    batch: int,
    seq: int,
    text_len: int,
    mixed: bool,
    checkpointing: bool,
    ema: bool,
    ffn_trained: bool = True,
    lora_inputs: int = 0,
    host: bool = False,
    overhead_gib: float = 0.5,
) -> dict[str, float]:
    """Peak memory (GiB) of one training step on the training device, by part.

    Weights fp32 (`params_on_device`: on the CPU, every weight the process holds), plus under autocast the
    half-precision copies of the decoder's weights its matmuls keep for backward. Gradients fp32 and AdamW
    moments (2 x fp32) for trainable weights. Activations saved for backward, per decoder layer and token
    (sdpa attention, so nothing grows with seq^2), measured with torch 2.13 / transformers 5.23:
    60 bytes x hidden in fp32, 44 under autocast (layer norms and the residual stay fp32), plus one or two
    ffn-wide tensors (GELU input; its output too when fc2 trains); plus, for LoRA with dropout, the dropped
    copy of each wrapped linear's input with its mask (act_bytes + 2 per input feature; `lora_inputs`, from
    `lora_dropout_inputs`); plus cross-attention keys/values over the text. With checkpointing: each layer's
    fp32 input plus one layer recomputed. Logits fp32 with their log-softmax and gradient. `host` (training on
    the CPU): glibc's heap keeps freed temporaries resident between the blocks still in use, measured at ~0.8x
    the live activations at the end of the forward pass (see docs/benchmarks.md). Finally a fixed runtime
    overhead (CUDA context and allocator, or the Python/torch process on the CPU).
    """
    gib = 2**30
    weights = params_on_device * 4
    if mixed:
        h = shape.hidden
        per_layer_matrices = 8 * h * h + 2 * h * shape.ffn
        # Casts of trained weights are cached for the whole forward; frozen ones live as long as their layer's
        # saved tensors, so with checkpointing only the layer being recomputed holds them.
        layers_cast = 1 if checkpointing and trainable < shape.layers * per_layer_matrices else shape.layers
        weights += 2 * (layers_cast * per_layer_matrices + shape.n_codebooks * h * shape.vocab_size)
    optim = trainable * (4 + 8) + (trainable * 4 if ema else 0)
    act_bytes = 2 if mixed else 4
    tokens = batch * seq
    per_token = (44 if mixed else 60) * shape.hidden + (2 if ffn_trained else 1) * shape.ffn * act_bytes
    per_layer = per_token * tokens + 2 * text_len * batch * shape.hidden * act_bytes
    lora = lora_inputs * tokens * (act_bytes + 2)
    if checkpointing:
        activations = shape.layers * tokens * shape.hidden * 4 + per_layer + lora / shape.layers
    else:
        activations = shape.layers * per_layer + lora
    logits = batch * shape.n_codebooks * seq * shape.vocab_size * (act_bytes + 4 + 4)
    activations += logits
    heap = 0.8 * activations if host else 0.0
    total = weights + optim + activations + heap + overhead_gib * gib
    return {
        "weights_gib": weights / gib,
        "optimizer_gib": optim / gib,
        "activations_gib": activations / gib,
        "heap_gib": heap / gib,
        "overhead_gib": overhead_gib,
        "total_gib": total / gib,
    }


def plan_memory(
    cfg: Any, shape: ModelShape, *, trainable: int, on_device: int, precision: str, device: Any
) -> dict[str, float]:
    """`estimate_memory` for a training config: its batch, crop, method and precision on `device`."""
    from tunekit.train.methods import build_method

    t, m = cfg.trainer, cfg.method
    kind = getattr(device, "type", str(device))
    lora = not build_method(m).full
    return estimate_memory(
        shape, params_on_device=on_device, trainable=trainable, batch=t.batch_size,
        seq=crop_frames(cfg, shape) + shape.max_delay + shape.prefix, text_len=min(cfg.data.max_text_tokens, 64),
        mixed=precision != "fp32", checkpointing=cfg.model.gradient_checkpointing, ema=t.ema_decay > 0,
        ffn_trained=not lora or m.targets != "attention",
        lora_inputs=lora_dropout_inputs(shape, m.targets) if lora and m.dropout > 0 else 0,
        host=kind == "cpu", overhead_gib=1.0 if kind == "cuda" else 0.5,
    )


def device_memory_gib(device: Any) -> float | None:
    """Total memory of the training device (GPU memory, or host RAM for the CPU)."""
    import torch

    if getattr(device, "type", "") == "cuda":
        return torch.cuda.get_device_properties(device).total_memory / 2**30
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return None


def human(n: float) -> str:
    """1234567 -> '1.23M'."""
    for unit, div in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:g}"


def format_plan(rows: list[tuple[str, str]]) -> str:
    """The pre-flight summary as aligned 'key  value' lines."""
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


def _gib(x: float) -> str:
    return f"{x:.1f} GiB" if x >= 1 else f"{x * 1024:.0f} MiB"


def print_plan(
    cfg: Any,
    *,
    shape: ModelShape,
    tokens: TokenSet,
    train_rows: np.ndarray,
    valid_rows: np.ndarray,
    trainable: int,
    total: int,
    on_device: int,
    precision: str,
    device: Any,
    world: int,
    resuming: str | None,
    show: bool = True,
) -> None:
    """Print (if `show`) what will run and its memory estimate; refuse when weights + optimiser alone cannot fit."""
    from tunekit.train.methods import build_method
    from tunekit.train.optim import warmup_steps

    t, m = cfg.trainer, cfg.method
    crop = crop_frames(cfg, shape)
    global_batch = t.batch_size * t.grad_accum * world
    mem = plan_memory(cfg, shape, trainable=trainable, on_device=on_device, precision=precision, device=device)
    have = check_fits(cfg, mem, device)
    if not show:
        return
    hours = tokens.frames[train_rows].sum() / shape.frame_rate / 3600

    print("tunekit train: pre-flight\n" + format_plan([
        ("model", f"{cfg.model.name}{' (tiny)' if cfg.models.tiny else ''}: {shape.n_codebooks} codebooks, "
                  f"{shape.layers} layers x {shape.hidden}"),
        ("method", build_method(m).plan()),
        ("trainable", f"{human(trainable)} of {human(total)} parameters ({100 * trainable / total:.2f}%)"),
        ("data", f"{len(train_rows)} train windows ({hours:.2f} h, {len(set(tokens.track_id[train_rows]))} tracks), "
                 f"{len(valid_rows)} valid windows ({len(set(tokens.track_id[valid_rows]))} other tracks); "
                 f"{tokens.info.codec}"),
        ("batch", f"{t.batch_size} x {t.grad_accum} accum x {world} devices = {global_batch} windows of "
                  f"<= {cfg.data.crop_seconds:g} s"),
        ("tokens/step", f"<= {human(global_batch * crop * shape.n_codebooks)}"),
        ("steps", f"{t.max_steps} (~{t.max_steps * global_batch / len(train_rows):.1f} epochs), lr {t.lr:g} "
                  f"{t.schedule}, warmup {warmup_steps(t.warmup, t.max_steps)}"),
        ("device", f"{device} x {world}, precision {precision}"
                   + (", gradient checkpointing" if cfg.model.gradient_checkpointing else "")),
        memory_row(mem, have),
        ("run", f"{cfg.out}" + (f" (resuming from {resuming})" if resuming else "")),
    ]), flush=True)
    warn_if_over(mem, have)


def check_fits(cfg: Any, mem: dict[str, float], device: Any) -> float | None:
    """The device's memory (GiB, None if unknown); refuses when weights and optimiser alone exceed it."""
    from tunekit.errors import ConfigError
    from tunekit.train.methods import build_method

    have = device_memory_gib(device)
    fixed = mem["weights_gib"] + mem["optimizer_gib"]
    if have is not None and fixed > have:
        raise ConfigError(
            f"model.name={cfg.model.name} with method={build_method(cfg.method).name} needs ~{fixed:.1f} GiB for "
            f"weights and optimiser alone but {device} has {have:.1f} GiB: use method=lora, a smaller model, or shard "
            "across GPUs with configs/accelerate/fsdp-musicgen.yaml", key="method")
    return have


def memory_row(mem: dict[str, float], have: float | None) -> tuple[str, str]:
    """The plan's memory line: the estimate by part, and what the device has."""
    return ("memory", f"~{_gib(mem['total_gib'])} per device (weights {_gib(mem['weights_gib'])}, optimiser "
                      f"{_gib(mem['optimizer_gib'])}, activations {_gib(mem['activations_gib'])}"
                      + (f", allocator {_gib(mem['heap_gib'])}" if mem["heap_gib"] else "") + ")"
                      + (f" of {have:.0f} GiB" if have else ""))


def warn_if_over(mem: dict[str, float], have: float | None) -> None:
    """Say what to change when the estimate exceeds the device's memory."""
    if have is not None and mem["total_gib"] > have:
        print(f"warning: the estimate exceeds the {have:.0f} GiB available; if it runs out of memory set "
              "model.gradient_checkpointing=true or lower trainer.batch_size (and raise trainer.grad_accum)")
