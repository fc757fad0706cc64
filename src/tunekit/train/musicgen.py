"""Fine-tune MusicGen (transformers) on tokens prepared by `tunekit prep`: LoRA or full, one CPU, one GPU,
or many GPUs via `accelerate launch`.

    tunekit train recipe=lofi data.path=out/lofi out=runs/lofi
    accelerate launch -m tunekit train recipe=lofi data.path=out/lofi out=runs/lofi        # DDP
    accelerate launch --config_file configs/accelerate/fsdp-musicgen.yaml -m tunekit train ...     # FSDP

Read top to bottom: `setup` loads and checks everything, prints the plan and resumes if a checkpoint exists;
`train_musicgen` loops (step, log, evaluate, checkpoint) and exports. What is MusicGen's own is here: the
`Musicgen` family (delay-pattern loss with condition dropout, which weights a checkpoint keeps, sampling).
The loop's shared parts are in tunekit.train.engine, the math in tunekit.train.{loss,lm,lora,checkpoint,...}.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tunekit.data.tokens import EvalWindows, MelodySource, StepBatches, TokenSet, TrainWindows, collate
from tunekit.errors import ConfigError, ConfigErrors
from tunekit.loggers import build_logger
from tunekit.train import checkpoint as ckpt
from tunekit.train.engine import TrainState, in_batches, load_trained_weights, run_steps, run_summary, start
from tunekit.train.export import atomic_dir, copy_attribution, data_card, write_model_card
from tunekit.train.lm import MusicgenLM, drop_conditions, encode_text, is_melody
from tunekit.train.loss import build_delayed, codebook_delays, masked_ce_sum
from tunekit.train.lora import (
    count_parameters, decoder_trained, enable_checkpointing, param_groups, set_decoder_dropout, target_regex,
)
from tunekit.train.methods import build_method
from tunekit.train.optim import build_optimizer
from tunekit.train.preflight import ModelShape, crop_frames, print_plan, select_rows
from tunekit.train.runtime import make_accelerator, prepare_run_dir, seed_everything


def model_shape(model: Any, max_text_tokens: int) -> ModelShape:
    """Token geometry and size of a MusicGen model."""
    dec = model.decoder.config
    stereo = dec.audio_channels == 2
    melody = is_melody(model)
    return ModelShape(
        n_codebooks=dec.num_codebooks, frame_rate=float(model.config.audio_encoder.frame_rate),
        vocab_size=dec.vocab_size, max_positions=dec.max_position_embeddings,
        prefix=(model.config.chroma_length + max_text_tokens) if melody else 0, hidden=dec.hidden_size,
        layers=dec.num_hidden_layers, ffn=dec.ffn_dim, max_delay=(dec.num_codebooks // (2 if stereo else 1)) - 1,
    )


@dataclass
class Musicgen:
    """MusicGen's side of the loop (an engine.Trainable): the summed delay-pattern cross-entropy of a batch of
    tokens, the tensors a checkpoint keeps, and audio for the evaluation prompts."""

    model: Any  # the transformers MusicGen model (LoRA layers injected in place)
    peft_model: Any | None  # the peft model around it for LoRA, None for a full fine-tune
    processor: Any  # the model's processor (its tokenizer), saved with an exported model
    text_encoder: Any  # frozen T5, on the training device
    device: torch.device  # the training device
    delays: list[int]  # per-codebook delay of the delay pattern
    pad_id: int
    start_id: int
    max_text_tokens: int
    trainable_names: list[str]  # the trained module's parameters a full fine-tune checkpoints
    sampling: Any  # the `eval` config group: sample length and sampling settings
    seed: int  # the samples' seed

    @property
    def tokenizer(self) -> Any:
        return getattr(self.processor, "tokenizer", self.processor)

    def loss_sum(self, lm: torch.nn.Module, batch: dict[str, Any], train: bool) -> torch.Tensor:
        """Summed masked cross-entropy of one micro-batch; `train` drops conditions as the batch says."""
        dev = self.device
        db = build_delayed(batch["codes"].to(dev), batch["n_frames"].to(dev), self.delays, self.pad_id, self.start_id)
        states, mask = encode_text(self.text_encoder, self.tokenizer, batch["captions"], dev, self.max_text_tokens)
        chroma = batch["chroma"].to(dev) if "chroma" in batch else None
        if train:
            states, mask, chroma = drop_conditions(states, mask, batch["drop"], chroma, batch.get("drop_melody"))
        return masked_ce_sum(lm(db.inputs, states, mask, chroma), db.targets, db.mask)

    def count(self, batch: dict[str, Any]) -> int:
        """Predicted tokens: every codebook predicts each valid frame once."""
        return len(self.delays) * int(batch["n_frames"].sum())

    def trained_weights(self, full_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The LoRA adapter in peft's names, or the trained parameters of a full fine-tune."""
        if self.peft_model is None:
            return {n: full_state[n] for n in self.trainable_names}
        from peft import get_peft_model_state_dict

        named = {f"base_model.model.{n}": v for n, v in full_state.items()}  # the peft model's names
        return get_peft_model_state_dict(self.peft_model, state_dict=named)

    def generate(self, prompts: list[str]) -> tuple[Any, int]:
        """Audio of `eval.seconds` per prompt, sampled with the seed and settings of the `eval` group."""
        from tunekit.models.musicgen import generate_audio

        self.model.eval()
        e = self.sampling
        return generate_audio(
            self.model, self.tokenizer, self.model.audio_encoder, prompts, e.seconds, seed=self.seed,
            window_seconds=e.seconds + 1, guidance_scale=e.guidance_scale, top_k=e.top_k, temperature=e.temperature,
        )


@dataclass
class Data:
    """The windows a run trains and validates on."""

    tokens: TokenSet
    train_rows: np.ndarray
    valid_rows: np.ndarray
    crop: int  # frames per training window
    melody: MelodySource | None  # chroma of the windows' audio, for melody models


def load_model(cfg: Any) -> tuple[Any, Any]:
    """The base model of `model.name` with the run's attention and dropout settings, and its processor."""
    from tunekit.models.musicgen import load_musicgen

    model, processor = load_musicgen(cfg.model.name, tiny=cfg.models.tiny, cache_dir=cfg.models.cache_dir)
    if cfg.model.attn_implementation:
        model.set_attn_implementation(cfg.model.attn_implementation)
    if cfg.model.dropout is not None:
        set_decoder_dropout(model, cfg.model.dropout)
    return model, processor


def setup(cfg: Any) -> tuple[TrainState, Musicgen, Data]:
    """Everything before the first step: load and check the data and the model (refusing before any work what
    cannot run), make the trained weights trainable, print the plan, build the optimiser and resume the newest
    checkpoint of `out=` if there is one."""
    t, run_dir = cfg.trainer, Path(cfg.out).expanduser()
    acc, precision = make_accelerator(t)
    main, dev = acc.is_main_process, acc.device
    if acc.distributed_type.name == "FSDP" and t.ema_decay > 0:
        raise ConfigError("trainer.ema_decay: EMA is not available under FSDP (the weights are sharded); set it to 0",
                          key="trainer.ema_decay")

    # ---- data and model, checked before any work ----
    tokens = TokenSet(cfg.data.path)
    model, processor = load_model(cfg)
    shape = model_shape(model, cfg.data.max_text_tokens)
    train_rows, valid_rows, problems = select_rows(tokens, cfg, shape)
    if problems:
        raise ConfigErrors(problems)

    # ---- what trains ----
    seed_everything(t.seed)
    peft_model = build_method(cfg.method).apply(model, target_regex=target_regex, trained=decoder_trained)
    if cfg.model.gradient_checkpointing:
        enable_checkpointing(model.decoder)
    lm = MusicgenLM(model)
    text_encoder = model.text_encoder.to(dev).eval()  # frozen, beside the trained module; EnCodec stays on the CPU
    trainable, total = count_parameters(model)

    latest = ckpt.latest_checkpoint(run_dir) if run_dir.is_dir() else None
    prepare_run_dir(cfg, latest is not None, write=main)  # every rank checks, so every rank stops on a problem
    on_device = total if dev.type == "cpu" else (  # on the CPU EnCodec shares the training memory
        sum(p.numel() for p in lm.parameters()) + sum(p.numel() for p in text_encoder.parameters()))
    print_plan(cfg, shape=shape, tokens=tokens, train_rows=train_rows, valid_rows=valid_rows, trainable=trainable,
               total=total, on_device=on_device, precision=precision, device=dev, world=acc.num_processes,
               resuming=latest.name if latest else None, show=main)
    if main:
        ckpt.remove_partial(run_dir)
    acc.wait_for_everyone()

    # ---- optimiser, resume ----
    if latest is not None:
        load_trained_weights(latest, model, peft_model)
    optimizer, scheduler = build_optimizer(param_groups(lm, t.weight_decay), t, dev.type)
    dec = model.decoder.config
    family = Musicgen(
        model=model, peft_model=peft_model, processor=processor,
        text_encoder=text_encoder, device=dev, delays=codebook_delays(dec.num_codebooks, dec.audio_channels),
        pad_id=dec.pad_token_id, start_id=dec.decoder_start_token_id, max_text_tokens=cfg.data.max_text_tokens,
        trainable_names=[n for n, p in lm.named_parameters() if p.requires_grad], sampling=cfg.eval, seed=t.seed,
    )
    state = start(acc, lm, optimizer, scheduler, family, t, precision, run_dir, latest)
    state.logger = build_logger(cfg.logger, run_dir, _plain(cfg)) if main else None
    state.prompts = _eval_prompts(cfg, tokens, valid_rows)
    data = Data(tokens, train_rows, valid_rows, crop_frames(cfg, shape), MelodySource(tokens) if lm.melody else None)
    return state, family, data


def train_loader(cfg: Any, data: Data, state: TrainState) -> torch.utils.data.DataLoader:
    """This rank's micro-batches from the step after `state.step` on: the sample stream is a function of the
    seed and the position only, so a resumed run reads what the uninterrupted one would have read."""
    t = cfg.trainer
    windows = TrainWindows(
        data.tokens, data.train_rows, data.crop, t.seed, t.cond_dropout, caption_variants=cfg.data.caption_variants,
        melody=data.melody, melody_dropout=t.melody_dropout,
    )
    return torch.utils.data.DataLoader(
        windows, batch_sampler=StepBatches(state.step, t.max_steps, t.batch_size, t.grad_accum, state.world,
                                           state.rank, start_sample=state.data_position),
        collate_fn=collate, num_workers=cfg.data.num_workers, pin_memory=state.device.type == "cuda",
        generator=torch.Generator().manual_seed(t.seed),
    )


def train_musicgen(cfg: Any) -> int:
    """Run (or resume) the training described by a validated TrainConfig; returns 0 when done."""
    t = cfg.trainer
    state, family, data = setup(cfg)
    loader = train_loader(cfg, data, state)
    valid = EvalWindows(data.tokens, data.valid_rows[: t.eval_windows], data.crop, data.melody)
    run_steps(state, iter(loader), lambda: in_batches(valid, t.batch_size, collate), epoch_windows=len(data.train_rows))
    if state.main:
        _export(cfg, state, family, data)
        state.logger.finish()
    state.acc.wait_for_everyone()
    return 0


def _export(cfg: Any, state: TrainState, family: Musicgen, data: Data) -> None:
    """Adapter (+ merged model) or full model, attribution and model card."""
    from tunekit.models.registry import resolve

    run_dir, model, peft_model, processor = state.run_dir, family.model, family.peft_model, family.processor
    if state.fsdp:  # this rank holds a shard only: the trained model again, from the final checkpoint's full weights
        model, processor = load_model(cfg)
        peft_model = build_method(cfg.method).apply(model, target_regex=target_regex, trained=decoder_trained)
        load_trained_weights(ckpt.latest_checkpoint(run_dir), model, peft_model)
    trainable, total = count_parameters(model)  # before a merge takes the adapters out
    if state.ema is not None and cfg.export.use_ema:
        state.ema.swap()
    base = resolve(cfg.model.name, tiny=cfg.models.tiny, cache_dir=cfg.models.cache_dir)
    if peft_model is not None:
        with atomic_dir(run_dir / "adapter") as tmp:
            peft_model.save_pretrained(str(tmp))
        if cfg.export.merge:
            merged = peft_model.merge_and_unload()
            with atomic_dir(run_dir / "merged") as tmp:
                merged.save_pretrained(str(tmp))
                processor.save_pretrained(str(tmp))
    else:
        with atomic_dir(run_dir / "model") as tmp:
            model.save_pretrained(str(tmp))
            processor.save_pretrained(str(tmp))
    attribution = copy_attribution(data.tokens.root, run_dir)
    write_model_card(run_dir, cfg=cfg, base=cfg.model.name, base_path=base, trainable=trainable, total=total,
                     data=data_card(data.tokens, data.train_rows, data.valid_rows), metrics=run_summary(state),
                     attribution=attribution)
    what = "adapter/" if peft_model is not None else "model/"
    print(f"done: {run_dir}/{what} (+ README.md model card); try it with: tunekit generate run={run_dir} "
          f"prompt='…'{' models=tiny' if cfg.models.tiny else ''}", flush=True)


def _eval_prompts(cfg: Any, tokens: TokenSet, valid_rows: Any) -> list[str]:
    """The configured prompts, else the first caption of each of the first n_prompts held-out tracks."""
    if cfg.eval.prompts:
        return [str(p) for p in cfg.eval.prompts]
    prompts, seen = [], set()
    for r in valid_rows:
        if tokens.track_id[r] not in seen and tokens.captions[r][0]:
            seen.add(tokens.track_id[r])
            prompts.append(tokens.captions[r][0])
        if len(prompts) >= cfg.eval.n_prompts:
            break
    return prompts


def _plain(cfg: Any) -> dict[str, Any]:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
