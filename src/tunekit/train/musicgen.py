"""Fine-tune MusicGen (transformers) on tokens prepared by `tunekit prep`: LoRA or full, one CPU, one GPU,
or many GPUs via `accelerate launch`.

    tunekit train recipe=lofi data.path=out/lofi out=runs/lofi
    accelerate launch -m tunekit train recipe=lofi data.path=out/lofi out=runs/lofi        # DDP
    accelerate launch --config_file configs/accelerate/fsdp.yaml -m tunekit train ...     # FSDP

Read top to bottom: load and check everything, print the plan, resume if a checkpoint exists, loop
(accumulate micro-batches normalised by the global token count, guard, clip, step, log, evaluate,
checkpoint), export. The math lives in tunekit.train.{loss,lm,lora,checkpoint,...}.
"""

from __future__ import annotations

import contextlib
import shutil
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from tunekit.data.tokens import EvalWindows, MelodySource, StepBatches, TokenSet, TrainWindows, collate
from tunekit.errors import ConfigError, ConfigErrors
from tunekit.loggers import build_logger
from tunekit.train import checkpoint as ckpt
from tunekit.train.ema import EMA
from tunekit.train.export import copy_attribution, data_card, write_model_card
from tunekit.train.guard import NanGuard
from tunekit.train.lm import MusicgenLM, drop_conditions, encode_text, is_melody
from tunekit.train.loss import build_delayed, codebook_delays, loss_scale, masked_ce_sum
from tunekit.train.lora import (
    apply_lora, count_parameters, enable_checkpointing, param_groups, set_decoder_dropout, unfreeze_decoder,
)
from tunekit.train.metrics import MetricsLog, StepTimer, host_rss_gib, peak_memory, reset_step_rss
from tunekit.train.optim import build_optimizer
from tunekit.train.preflight import ModelShape, crop_frames, print_plan, select_rows
from tunekit.train.runtime import make_accelerator, prepare_run_dir, reduce_sum, seed_everything


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


@contextlib.contextmanager
def _atomic_dir(final: Path) -> Iterator[Path]:
    """Write a folder under a temporary name, then swap it into place."""
    tmp = final.with_name(f".tmp-{final.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    yield tmp
    old = final.with_name(f".old-{final.name}")
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def train_musicgen(cfg: Any) -> int:
    """Run (or resume) the training described by a validated TrainConfig; returns 0 when done."""
    from tunekit.models.musicgen import load_musicgen

    t, run_dir = cfg.trainer, Path(cfg.out).expanduser()
    acc, precision = make_accelerator(t)
    main, rank, world = acc.is_main_process, acc.process_index, acc.num_processes
    dev = acc.device
    distributed_fsdp = acc.distributed_type.name == "FSDP"
    if distributed_fsdp and t.ema_decay > 0:
        raise ConfigError("trainer.ema_decay: EMA is not available under FSDP (the weights are sharded); set it to 0",
                          key="trainer.ema_decay")

    # ---- data and model, checked before any work ------------------------------------------------------
    tokens = TokenSet(cfg.data.path)
    model, processor = load_musicgen(cfg.model.name, tiny=cfg.models.tiny, cache_dir=cfg.models.cache_dir)
    if cfg.model.attn_implementation:
        model.set_attn_implementation(cfg.model.attn_implementation)
    if cfg.model.dropout is not None:
        set_decoder_dropout(model, cfg.model.dropout)
    tokenizer = getattr(processor, "tokenizer", processor)
    shape = model_shape(model, cfg.data.max_text_tokens)
    train_rows, valid_rows, problems = select_rows(tokens, cfg, shape)
    if problems:
        raise ConfigErrors(problems)
    k, channels = shape.n_codebooks, model.decoder.config.audio_channels
    delays = codebook_delays(k, channels)
    pad_id, start_id = model.decoder.config.pad_token_id, model.decoder.config.decoder_start_token_id
    crop = crop_frames(cfg, shape)
    global_batch = t.batch_size * t.grad_accum * world

    seed_everything(t.seed)
    peft_model = None
    if cfg.method.name == "lora":
        m = cfg.method
        peft_model = apply_lora(model, m.r, m.alpha, m.dropout, m.targets)
    else:
        unfreeze_decoder(model)
    if cfg.model.gradient_checkpointing:
        enable_checkpointing(model.decoder)
    lm = MusicgenLM(model)
    text_encoder = model.text_encoder.to(dev).eval()  # frozen, beside the trained module; EnCodec stays on the CPU
    trainable, total = count_parameters(model)
    trainable_names = [n for n, p in lm.named_parameters() if p.requires_grad]

    latest = ckpt.latest_checkpoint(run_dir) if run_dir.is_dir() else None
    prepare_run_dir(cfg, latest is not None, write=main)  # every rank checks, so every rank stops on a problem
    on_device = total if dev.type == "cpu" else (  # on the CPU EnCodec shares the training memory
        sum(p.numel() for p in lm.parameters()) + sum(p.numel() for p in text_encoder.parameters()))
    print_plan(cfg, shape=shape, tokens=tokens, train_rows=train_rows, valid_rows=valid_rows, trainable=trainable,
               total=total, on_device=on_device, precision=precision, device=dev, world=world,
               resuming=latest.name if latest else None, show=main)
    if main:
        ckpt.remove_partial(run_dir)
    acc.wait_for_everyone()

    # ---- optimiser, resume ----------------------------------------------------------------------------
    state: dict[str, Any] = {}
    if latest is not None:
        weights = ckpt.load_tensors(latest)
        if peft_model is not None:
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(peft_model, weights)
        else:
            unexpected = model.load_state_dict(weights, strict=False).unexpected_keys
            if unexpected:
                raise ConfigError(
                    f"{latest} holds weights this model lacks ({unexpected[0]}, …); use a new out=", key="out"
                )
        state = ckpt.read_state(latest)
    optimizer, scheduler = build_optimizer(param_groups(lm, t.weight_decay), t, dev.type)
    lm_p, optimizer = acc.prepare(lm, optimizer)
    params = [p for p in lm_p.parameters() if p.requires_grad]
    ema = EMA({n: p for n, p in lm.named_parameters() if p.requires_grad}, t.ema_decay) if t.ema_decay > 0 else None
    guard = NanGuard(t.max_bad_steps, fp16=precision == "fp16")
    start, best = 0, None
    if latest is not None:
        opt_file = latest / f"optimizer-rank{rank}.pt"
        opt_state = torch.load(opt_file, weights_only=True) if opt_file.is_file() else ckpt.load_optimizer(latest)
        optimizer.load_state_dict(opt_state)
        scheduler.load_state_dict(state["scheduler"])
        if acc.scaler is not None and state.get("scaler"):
            acc.scaler.load_state_dict(state["scaler"])
        if ema is not None:
            ema.load_state_dict(ckpt.load_tensors(latest, "ema"))
        guard.load(state.get("guard", {}))
        start, best = int(state["step"]), state.get("best_valid_loss")
        if state.get("world_size", world) != world and main:
            print(f"note: resumed with {world} processes instead of {state['world_size']}: the data order changes")
        ckpt.load_rng(latest, rank)
    elif world > 1:
        torch.manual_seed(t.seed + 1000 * rank)  # identical initial weights on every rank, then different dropout

    metrics = MetricsLog(run_dir / "metrics.jsonl")
    if main:
        metrics.truncate_after(start)
    logger = build_logger(cfg.logger, run_dir, _plain(cfg)) if main else None

    melody = MelodySource(tokens) if lm.melody else None
    train_ds = TrainWindows(
        tokens, train_rows, crop, t.seed, t.cond_dropout, caption_variants=cfg.data.caption_variants, melody=melody,
        melody_dropout=t.melody_dropout,
    )
    loader = torch.utils.data.DataLoader(
        train_ds, batch_sampler=StepBatches(start, t.max_steps, t.batch_size, t.grad_accum, world, rank),
        collate_fn=collate, num_workers=cfg.data.num_workers, pin_memory=dev.type == "cuda",
        generator=torch.Generator().manual_seed(t.seed),
    )
    prompts = _eval_prompts(cfg, tokens, valid_rows)

    def forward_sum(batch: dict[str, Any], train: bool) -> torch.Tensor:
        """Summed masked cross-entropy of one micro-batch."""
        db = build_delayed(batch["codes"].to(dev), batch["n_frames"].to(dev), delays, pad_id, start_id)
        states, mask = encode_text(text_encoder, tokenizer, batch["captions"], dev, cfg.data.max_text_tokens)
        chroma = batch["chroma"].to(dev) if "chroma" in batch else None
        if train:
            states, mask, chroma = drop_conditions(states, mask, batch["drop"], chroma, batch.get("drop_melody"))
        return masked_ce_sum(lm_p(db.inputs, states, mask, chroma), db.targets, db.mask)

    def backward_sum(batch: dict[str, Any], scale: float) -> torch.Tensor:
        """Forward and backward of one training micro-batch; returns its loss sum, detached.

        The loss tensor must not outlive this call: it holds the step's autograd graph, thousands of small
        nodes allocated in between the activations, which would pin the freed activation memory into pieces
        the next step cannot reuse, so the heap would grow by about one step's activations.
        """
        s = forward_sum(batch, train=True)
        acc.backward(s * scale)
        return s.detach()

    def validate() -> float:
        """Mean CE per token over the first eval_windows held-out windows (every rank runs the same batches)."""
        lm_p.eval()
        ds = EvalWindows(tokens, valid_rows[: t.eval_windows], crop, melody)
        total_loss, count = 0.0, 0
        with torch.no_grad():
            for i in range(0, len(ds), t.batch_size):
                batch = collate([ds[j] for j in range(i, min(i + t.batch_size, len(ds)))])
                total_loss += float(forward_sum(batch, train=False))
                count += k * int(batch["n_frames"].sum())
        return total_loss / max(count, 1)

    def write_samples(done: int) -> None:
        """Fixed prompts, fixed seed: audio under <out>/samples/step-XXXXXXX/ and to the logger."""
        from tunekit.atomic import write_json
        from tunekit.audio.io import write_audio
        from tunekit.models.musicgen import generate_audio

        if not prompts:
            return
        # Under FSDP every rank must take part in each forward (the layers all-gather their shards), so all
        # ranks generate the same thing in lock-step; otherwise the main process generates alone.
        if main or distributed_fsdp:
            model.eval()
            with acc.autocast():
                audio, rate = generate_audio(
                    model, tokenizer, model.audio_encoder, prompts, cfg.eval.seconds, seed=t.seed,
                    window_seconds=cfg.eval.seconds + 1, guidance_scale=cfg.eval.guidance_scale, top_k=cfg.eval.top_k,
                    temperature=cfg.eval.temperature,
                )
        if main:
            folder = run_dir / "samples" / ckpt.step_name(done)
            for i, a in enumerate(audio):
                write_audio(folder / f"{i:02d}.wav", a, rate, subtype="FLOAT")
            write_json(folder / "prompts.json", {"step": done, "seed": t.seed, "prompts": prompts})
            logger.log_samples([(p, a, rate) for p, a in zip(prompts, audio)], done)
        acc.wait_for_everyone()

    def save(done: int, last_loss: float | None) -> None:
        """Checkpoint: weights + optimiser + scheduler/scaler/RNG/counters, written atomically."""
        tmp = Path(run_dir) / ckpt.CHECKPOINTS / f".tmp-{ckpt.step_name(done)}"
        if main:
            ckpt.begin(run_dir, done)
        acc.wait_for_everyone()
        ckpt.save_rng(tmp, rank)
        full_state = acc.get_state_dict(lm_p)  # gathers the shards under FSDP
        if distributed_fsdp:
            torch.save(optimizer.state_dict(), tmp / f"optimizer-rank{rank}.pt")
        if main:
            if peft_model is not None:
                from peft import get_peft_model_state_dict

                named = {f"base_model.model.{n}": v for n, v in full_state.items()}  # the peft model's names
                weights = get_peft_model_state_dict(peft_model, state_dict=named)
            else:
                weights = {n: full_state[n] for n in trainable_names}
            ckpt.save_tensors(weights, tmp)
            if ema is not None:
                ckpt.save_tensors(ema.state_dict(), tmp, "ema")
            if not distributed_fsdp:
                ckpt.save_optimizer(tmp, optimizer.state_dict())
        acc.wait_for_everyone()
        if main:
            ckpt.finish(tmp, {
                "step": done, "data_position": done * global_batch, "world_size": world, "train_loss": last_loss,
                "scheduler": scheduler.state_dict(), "scaler": acc.scaler.state_dict() if acc.scaler else None,
                "guard": guard.state(), "best_valid_loss": best,
            }, t.keep_last)
        acc.wait_for_everyone()

    # ---- the loop ---------------------------------------------------------------------------------------
    timer, batches = StepTimer(), iter(loader)
    loss = valid_loss = None
    window_losses: list[float] = []
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    for step in range(start, t.max_steps):
        done = step + 1
        t0, cpu0 = time.perf_counter(), time.process_time()
        reset_step_rss()
        micro = [next(batches) for _ in range(t.grad_accum)]
        data_s = time.perf_counter() - t0
        n_tokens = reduce_sum(acc, sum(k * int(b["n_frames"].sum()) for b in micro))
        scale = loss_scale(int(n_tokens), world)
        lm_p.train()
        loss_sum = torch.zeros((), device=dev)
        for i, batch in enumerate(micro):
            with acc.no_sync(lm_p) if i < len(micro) - 1 else contextlib.nullcontext():
                loss_sum += backward_sum(batch, scale)
        loss = reduce_sum(acc, float(loss_sum)) / n_tokens
        grad_norm = float(acc.clip_grad_norm_(params, t.grad_clip if t.grad_clip > 0 else float("inf")))
        lr = scheduler.get_last_lr()[0]
        ok = guard.check(loss, grad_norm, done)
        if ok or precision == "fp16":  # fp16: the loss scaler itself skips a step whose gradients overflowed
            optimizer.step()
        with warnings.catch_warnings():  # a skipped first step is not the ordering mistake torch warns about
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)`")
            scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None and ok and done % t.ema_every == 0:
            ema.update()
        timer.add(int(n_tokens), data_s)
        if ok:
            window_losses.append(loss)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        row = {"step": done, "loss": loss, "lr": lr, "grad_norm": grad_norm, "tokens": int(n_tokens),
               "step_s": time.perf_counter() - t0, "cpu_s": time.process_time() - cpu0, "data_s": data_s,
               "rss_peak_gib": host_rss_gib()[1], "epoch": done * global_batch / len(train_rows), "skipped": not ok,
               **guard.state()}
        if main:
            metrics.write(row)
        if main and (done % t.log_every == 0 or done == t.max_steps):
            perf = {**timer.read(), **peak_memory(dev)}
            avg = sum(window_losses) / len(window_losses) if window_losses else float("nan")
            logger.log({"train/loss": avg, "train/lr": lr, "train/grad_norm": grad_norm,
                        **{f"perf/{k_}": v for k_, v in perf.items()},
                        **{f"train/{k_}": v for k_, v in guard.state().items()}}, done)
            print(f"step {done}/{t.max_steps}  loss {avg:.4f}  lr {lr:.2e}  grad {grad_norm:.3f}  "
                  f"{perf['tokens_per_s']:.0f} tok/s  data {100 * perf['data_wait_frac']:.0f}%", flush=True)
            window_losses = []
        if t.eval_every and (done % t.eval_every == 0 or done == t.max_steps):
            valid_loss = validate()
            best = valid_loss if best is None else min(best, valid_loss)
            write_samples(done)
            if main:
                metrics.write({"step": done, "valid_loss": valid_loss, "best_valid_loss": best})
                logger.log({"valid/loss": valid_loss, "valid/best_loss": best}, done)
                print(f"step {done}: valid loss {valid_loss:.4f} (best {best:.4f})", flush=True)
        if (t.save_every and done % t.save_every == 0) or done == t.max_steps:
            save(done, loss)

    # ---- export -----------------------------------------------------------------------------------------
    if main:
        _export(cfg, run_dir, model, peft_model, processor, ema, tokens, train_rows, valid_rows, trainable, total,
                {"step": t.max_steps, "global_batch": global_batch, "world_size": world, "precision": precision,
                 "train_loss": _last(metrics, "loss"), "valid_loss": _last(metrics, "valid_loss"),
                 "best_valid_loss": _last(metrics, "best_valid_loss"), "tokens_per_s": _throughput(metrics),
                 **guard.state()})
        logger.finish()
    acc.wait_for_everyone()
    return 0


def _export(cfg: Any, run_dir: Path, model: Any, peft_model: Any, processor: Any, ema: EMA | None, tokens: TokenSet,
            train_rows: Any, valid_rows: Any, trainable: int, total: int, summary: dict[str, Any]) -> None:
    """Adapter (+ merged model) or full model, attribution and model card."""
    from tunekit.models.registry import resolve

    if ema is not None and cfg.export.use_ema:
        ema.swap()
    base = resolve(cfg.model.name, tiny=cfg.models.tiny, cache_dir=cfg.models.cache_dir)
    if peft_model is not None:
        with _atomic_dir(run_dir / "adapter") as tmp:
            peft_model.save_pretrained(str(tmp))
        if cfg.export.merge:
            merged = peft_model.merge_and_unload()
            with _atomic_dir(run_dir / "merged") as tmp:
                merged.save_pretrained(str(tmp))
                processor.save_pretrained(str(tmp))
    else:
        with _atomic_dir(run_dir / "model") as tmp:
            model.save_pretrained(str(tmp))
            processor.save_pretrained(str(tmp))
    attribution = copy_attribution(tokens.root, run_dir)
    write_model_card(run_dir, cfg=cfg, base=cfg.model.name, base_path=base, trainable=trainable, total=total,
                     data=data_card(tokens, train_rows, valid_rows), metrics=summary, attribution=attribution)
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


def _throughput(metrics: MetricsLog) -> float | None:
    """Trained tokens per second of step time over the whole run."""
    rows = [r for r in metrics.rows() if "step_s" in r]
    seconds = sum(r["step_s"] for r in rows)
    return sum(r["tokens"] for r in rows) / seconds if seconds > 0 else None


def _last(metrics: MetricsLog, key: str) -> Any:
    values = [r[key] for r in metrics.rows() if key in r]
    return values[-1] if values else None


def _plain(cfg: Any) -> dict[str, Any]:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
