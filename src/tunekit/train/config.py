"""Schema of `tunekit train` (configs/train.yaml + configs/method/, configs/logger/, recipes/)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING

from tunekit.errors import ConfigError
from tunekit.loggers import LoggerConfig
from tunekit.models.config import ModelChoice, ModelsConfig
from tunekit.train.lora import PRESETS
from tunekit.train.methods import method_class

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda", "mps")
SCHEDULES = ("cosine", "constant")
TIMESTEPS = ("auto", "turbo", "logit_normal")  # flow.timesteps (tunekit.train.flow.TimestepSampler)


@dataclass
class ModelConfig(ModelChoice):
    """The model to fine-tune: family and checkpoint (the resolved name is written into the run's config.yaml)."""

    gradient_checkpointing: bool = False  # recompute decoder activations in backward: far less memory, ~30% slower
    attn_implementation: str | None = None  # sdpa | eager | flash_attention_2; null: transformers' default (sdpa)
    dropout: float | None = None  # decoder dropout (hidden, attention, activation); null: the checkpoint's (0.1)


@dataclass
class MethodConfig:
    """How the weights are trained (tunekit.train.methods): LoRA adapters (peft) or all of the trained module."""

    _target_: str = "tunekit.train.methods.Lora"  # set by method=lora | full: tunekit.train.methods.Lora | .FullFineTune
    r: int = 16  # LoRA rank (musicgen-dreamboothing's rank and alpha: 16, 16)
    alpha: float = 16.0  # LoRA alpha; the update is scaled by alpha / r
    dropout: float = 0.05  # dropout on the LoRA branch input
    targets: str = "attention_ffn"  # attention (q/k/v/out) | attention_ffn (+fc1/fc2) | all (+heads, embeddings, proj)


@dataclass
class DataConfig:
    """The prepared dataset and how training examples are cut from it."""

    path: str = MISSING  # output folder of `tunekit prep` with the tokens stage (pipeline=musicgen)
    pipeline: str | None = None  # prep pipeline this run expects (checked against <path>/summary.json); null: any
    crop_seconds: float = 30.0  # MusicGen's 30 s training crop; longer windows cropped at random, shorter padded and masked
    min_seconds: float = 1.0  # windows with fewer seconds of tokens are not trained on
    train_split: str = "train"  # split name (from prep's per-track `split` column) used for training
    valid_split: str = "valid"  # split name used for validation loss and evaluation prompts
    caption_variants: bool = True  # sample one of each window's caption variants per step (false: always variant 0)
    max_text_tokens: int = 256  # captions are truncated to this many text-encoder tokens
    num_workers: int = 0  # DataLoader worker processes (0: in the training process; tokens are memory-mapped and tiny)


@dataclass
class TrainerConfig:
    """Optimisation, precision, schedule, evaluation and checkpoint cadence."""

    max_steps: int = 1000  # optimiser steps
    batch_size: int = 2  # windows per micro-batch per device (2 x grad_accum 8 = musicgen-dreamboothing's 16)
    grad_accum: int = 8  # micro-batches per optimiser step; global batch = batch_size x grad_accum x devices
    lr: float = 2.0e-4  # peak learning rate: LoRA's 2e-4 (method=full sets 1e-5); recipes may override
    min_lr_ratio: float = 0.1  # the cosine schedule decays to lr x min_lr_ratio
    schedule: str = "cosine"  # cosine | constant (both after linear warmup)
    # warmup: a fraction of max_steps when < 1, else a number of steps; 3% suits small data (audiocraft's
    # 4000 steps are for 20k hours)
    warmup: float = 0.03
    weight_decay: float = 0.1  # AdamW weight decay (not applied to biases, norms and embeddings)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])  # AdamW betas (audiocraft's)
    grad_clip: float = 1.0  # max global gradient norm (0: no clipping)
    precision: str = "auto"  # auto (bf16 on GPUs that support it, else fp32) | fp32 | bf16 | fp16 (with a loss scaler)
    device: str = "auto"  # auto (cuda when available) | cpu | cuda | mps; `accelerate launch` decides for multi-GPU
    # per-sample probability of training on the empty condition, what classifier-free guidance contrasts with
    # (audiocraft: 0.3, per batch)
    cond_dropout: float = 0.3
    melody_dropout: float = 0.2  # melody models: per-sample probability of dropping only the melody condition
    # exponential moving average of the trained weights (0: off; over a few thousand steps EMA mostly lags;
    # audiocraft uses 0.99 every 10 steps)
    ema_decay: float = 0.0
    ema_every: int = 10  # steps between EMA updates
    log_every: int = 10  # steps between console/logger lines (metrics.jsonl gets every step)
    eval_every: int = 200  # steps between validation loss + samples (0: never)
    eval_windows: int = 64  # held-out windows in each validation loss
    save_every: int = 200  # steps between checkpoints (a final one is always written)
    keep_last: int = 2  # checkpoints kept (older ones are deleted)
    max_bad_steps: int = 10  # consecutive non-finite steps that stop the run
    seed: int = 0  # seeds python, numpy, torch, the data order, crops, captions and condition dropout


@dataclass
class EvalConfig:
    """Fixed evaluation prompts, generated with fixed seeds at every evaluation."""

    prompts: list[str] = field(default_factory=list)  # prompts to sample; empty: the first captions of held-out windows
    n_prompts: int = 4  # how many held-out captions to use when `prompts` is empty (0: no samples)
    seconds: float = 8.0  # length of each sample
    guidance_scale: float | None = 3.0  # classifier-free guidance scale (flow-matching families: null = the variant's)
    steps: int | None = None  # flow-matching families: sampling steps (null: the variant's, turbo 8, base/sft 50)
    shift: float | None = None  # flow-matching families: timestep shift (null: the variant's, turbo 3, base/sft 1)
    top_k: int = 250  # top-k sampling
    temperature: float = 1.0  # sampling temperature


@dataclass
class FlowConfig:
    """Flow-matching families (ACE-Step 1.5): how training times are drawn. MusicGen ignores this section."""

    # flow-matching families: auto (turbo for turbo checkpoints, logit_normal for base/sft) | turbo (uniform over
    # the 8-step shift-3 times turbo samples at) | logit_normal (sigmoid of a normal)
    timesteps: str = "auto"
    logit_mean: float = -0.4  # flow-matching families: mean of the normal behind logit_normal times (Side-Step's)
    logit_std: float = 1.0  # flow-matching families: its standard deviation


@dataclass
class ExportConfig:
    """What the finished run leaves behind besides the adapter / model."""

    merge: bool = False  # LoRA: also write the adapter merged into the base model (transformers format) to <out>/merged
    use_ema: bool = True  # when EMA is on, export the EMA weights


@dataclass
class TrainConfig:
    """`tunekit train`: fine-tune a music generator (MusicGen, ACE-Step 1.5) on a prepared dataset."""

    out: str = MISSING  # run folder: config, metrics, checkpoints, samples, adapter/model, model card
    recipe_name: str | None = None  # name of the recipe this run uses (set by recipes/*.yaml; shown in the model card)
    resume: bool = True  # continue from the latest checkpoint in out= (false: refuse to reuse a run folder)
    model: ModelConfig = field(default_factory=ModelConfig)  # the model family and checkpoint to fine-tune
    method: MethodConfig = field(default_factory=MethodConfig)  # LoRA or full fine-tuning
    data: DataConfig = field(default_factory=DataConfig)  # prepared data and crops
    trainer: TrainerConfig = field(default_factory=TrainerConfig)  # optimisation and cadence
    eval: EvalConfig = field(default_factory=EvalConfig)  # evaluation samples
    export: ExportConfig = field(default_factory=ExportConfig)  # final artefacts
    flow: FlowConfig = field(default_factory=FlowConfig)  # flow-matching families: training times
    logger: LoggerConfig = field(default_factory=LoggerConfig)  # experiment logger
    models: ModelsConfig = field(default_factory=ModelsConfig)  # real or tiny weights

    @classmethod
    def fill_defaults(cls, cfg: Any) -> None:
        """model.name=null becomes the chosen family's default checkpoint, so every part of a run (and its
        config.yaml) sees the checkpoint it trains."""
        from tunekit.models.registry import DEFAULTS

        if cfg.model.name is None and cfg.model.family in DEFAULTS:
            cfg.model.name = DEFAULTS[cfg.model.family]

    @classmethod
    def problems(cls, cfg: Any) -> list[str]:
        """Every invalid value, each naming its key (checked before any work)."""
        p: list[str] = []
        t, m, d = cfg.trainer, cfg.method, cfg.data

        def need(ok: bool, key: str, msg: str) -> None:
            if not ok:
                p.append(f"{key}: {msg}")

        try:
            method_class(m._target_)
        except ConfigError as exc:
            p.append(f"method._target_: {exc}")
        need(m.targets in PRESETS, "method.targets", f"must be one of {', '.join(PRESETS)}")
        need(m.r >= 1, "method.r", "LoRA rank must be >= 1")
        need(m.alpha > 0, "method.alpha", "must be > 0")
        need(0 <= m.dropout < 1, "method.dropout", "must be in [0, 1)")
        need(t.max_steps >= 1, "trainer.max_steps", "must be >= 1")
        need(t.batch_size >= 1, "trainer.batch_size", f"must be >= 1 (got {t.batch_size})")
        need(t.grad_accum >= 1, "trainer.grad_accum", f"must be >= 1 (got {t.grad_accum})")
        need(t.lr > 0, "trainer.lr", f"must be > 0 (got {t.lr})")
        need(0 <= t.min_lr_ratio <= 1, "trainer.min_lr_ratio", "must be in [0, 1]")
        need(t.schedule in SCHEDULES, "trainer.schedule", f"must be one of {', '.join(SCHEDULES)}")
        need(t.warmup >= 0, "trainer.warmup", "must be >= 0")
        need(t.weight_decay >= 0, "trainer.weight_decay", "must be >= 0")
        need(len(t.betas) == 2 and all(0 <= b < 1 for b in t.betas), "trainer.betas", "must be two values in [0, 1)")
        need(t.grad_clip >= 0, "trainer.grad_clip", "must be >= 0 (0 disables clipping)")
        need(t.precision in PRECISIONS, "trainer.precision", f"must be one of {', '.join(PRECISIONS)}")
        need(t.device in DEVICES, "trainer.device", f"must be one of {', '.join(DEVICES)}")
        need(0 <= t.cond_dropout < 1, "trainer.cond_dropout", "must be in [0, 1)")
        need(0 <= t.melody_dropout < 1, "trainer.melody_dropout", "must be in [0, 1)")
        need(0 <= t.ema_decay < 1, "trainer.ema_decay", "must be in [0, 1) (0 disables EMA)")
        need(t.ema_every >= 1, "trainer.ema_every", "must be >= 1")
        need(t.log_every >= 1, "trainer.log_every", "must be >= 1")
        need(t.eval_every >= 0, "trainer.eval_every", "must be >= 0 (0: never)")
        need(t.eval_windows >= 1, "trainer.eval_windows", "must be >= 1")
        need(t.save_every >= 0, "trainer.save_every", "must be >= 0 (0: only the final checkpoint)")
        need(t.keep_last >= 1, "trainer.keep_last", "must be >= 1")
        need(t.max_bad_steps >= 1, "trainer.max_bad_steps", "must be >= 1")
        need(cfg.model.dropout is None or 0 <= cfg.model.dropout < 1, "model.dropout", "must be in [0, 1) or null")
        need(d.crop_seconds > 0, "data.crop_seconds", f"must be > 0 (got {d.crop_seconds})")
        need(d.min_seconds >= 0, "data.min_seconds", "must be >= 0")
        need(d.min_seconds <= d.crop_seconds, "data.min_seconds", "must not exceed data.crop_seconds")
        need(d.max_text_tokens >= 1, "data.max_text_tokens", "must be >= 1")
        need(d.num_workers >= 0, "data.num_workers", "must be >= 0")
        need(cfg.eval.seconds > 0, "eval.seconds", "must be > 0")
        need(cfg.eval.n_prompts >= 0, "eval.n_prompts", "must be >= 0")
        need(cfg.eval.top_k >= 0, "eval.top_k", "must be >= 0")
        need(cfg.eval.temperature > 0, "eval.temperature", "must be > 0")
        g = cfg.eval.guidance_scale
        need(g is None or g >= 0, "eval.guidance_scale", "must be >= 0 (1: no guidance)")
        need(g is not None or cfg.model.family != "musicgen", "eval.guidance_scale",
             "MusicGen needs a number (its default is 3.0); null means a flow-matching variant's own default")
        need(cfg.eval.steps is None or cfg.eval.steps >= 1, "eval.steps", "must be >= 1 or null")
        need(cfg.eval.shift is None or cfg.eval.shift > 0, "eval.shift", "must be > 0 or null")
        need(cfg.flow.timesteps in TIMESTEPS, "flow.timesteps", f"must be one of {', '.join(TIMESTEPS)}")
        need(cfg.flow.logit_std > 0, "flow.logit_std", "must be > 0")
        need(cfg.logger.mode in ("auto", "online", "offline"), "logger.mode", "must be auto, online or offline")
        out = Path(str(cfg.out)).expanduser() if cfg.out else None
        need(out is None or not out.exists() or out.is_dir(), "out", f"{cfg.out} is a file; give a folder for the run")
        return p
