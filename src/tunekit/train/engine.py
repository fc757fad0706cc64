"""The parts of a training loop every model family shares: one optimiser step over accumulated micro-batches,
the validation loss, sample writing, checkpoint save and resume, and each step's metrics.

A family's trainer (`train/musicgen.py`) loads its model and data, wraps what is specific to it in a `Trainable`
(its summed loss, the tensors a checkpoint keeps, its sampler), hands both to `start`, and runs a short loop:

    state = start(acc, module, optimizer, scheduler, family, cfg.trainer, precision, run_dir, latest)
    while state.step < max_steps:
        result = train_step(state, micro_batches)
        ... validate(state, batches), write_samples(state), save_checkpoint(state, result.loss)

The math these call lives in the library modules (`loss`, `checkpoint`, `guard`, `ema`, `metrics`).
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from tunekit.errors import ConfigError
from tunekit.train import checkpoint as ckpt
from tunekit.train.ema import EMA
from tunekit.train.guard import NanGuard
from tunekit.train.loss import loss_scale
from tunekit.train.metrics import MetricsLog, StepTimer, host_rss_gib, peak_memory, reset_step_rss
from tunekit.train.runtime import reduce_sum


class Trainable(Protocol):
    """What a model family's trainer supplies to the shared loop."""

    def loss_sum(self, model: torch.nn.Module, batch: dict[str, Any], train: bool) -> torch.Tensor:
        """Summed (not averaged) loss of one micro-batch through `model`, the trained module as prepared;
        `train` applies what only training does (condition dropout)."""
        ...

    def count(self, batch: dict[str, Any]) -> int:
        """How many terms `loss_sum` adds up for `batch`: the losses are averaged over these."""
        ...

    def trained_weights(self, full_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The tensors a checkpoint keeps, from the trained module's full state dict."""
        ...

    def generate(self, prompts: list[str]) -> tuple[Sequence[Any], int]:
        """One (channels, samples) float32 array per prompt, and the sample rate."""
        ...


@dataclass
class TrainState:
    """Everything a step, a validation, the samples and a checkpoint touch."""

    acc: Any  # accelerate.Accelerator: device, precision, DDP/FSDP
    model: torch.nn.Module  # the trained module as accelerate prepared it (wrapped under DDP/FSDP)
    optimizer: Any
    scheduler: Any
    family: Trainable
    trainer: Any  # the validated `trainer` config group
    run_dir: Path
    precision: str  # fp32 | bf16 | fp16
    guard: NanGuard
    metrics: MetricsLog
    ema: EMA | None = None
    logger: Any = None  # the experiment logger on the main process, None on the others
    prompts: list[str] = field(default_factory=list)  # fixed prompts of the samples written at each evaluation
    step: int = 0  # optimiser steps done
    data_position: int = 0  # samples of the training stream consumed by those steps (over every rank)
    best: float | None = None  # lowest validation loss so far
    params: list[torch.nn.Parameter] = field(init=False)  # trained parameters, in the order the model holds them

    def __post_init__(self) -> None:
        self.params = [p for p in self.model.parameters() if p.requires_grad]

    @property
    def main(self) -> bool:
        return self.acc.is_main_process

    @property
    def rank(self) -> int:
        return self.acc.process_index

    @property
    def world(self) -> int:
        return self.acc.num_processes

    @property
    def device(self) -> torch.device:
        return self.acc.device

    @property
    def fsdp(self) -> bool:
        return self.acc.distributed_type.name == "FSDP"

    @property
    def global_batch(self) -> int:
        """Windows per optimiser step over all micro-batches and ranks."""
        return self.trainer.batch_size * self.trainer.grad_accum * self.world


@dataclass(frozen=True)
class StepResult:
    """What one optimiser step measured."""

    loss: float  # mean loss per counted term over the global batch (NaN when the step was bad)
    grad_norm: float  # before clipping
    lr: float  # the learning rate the step used
    tokens: int  # counted terms over all ranks
    applied: bool  # False when the NaN guard skipped the update


# ---- setup and resume ------------------------------------------------------------------------------------------


def load_trained_weights(folder: Path, model: Any, peft_model: Any | None) -> None:
    """Load a checkpoint's trained weights into the model, before accelerate wraps it: the LoRA adapter through
    peft, or the fine-tuned tensors of a full fine-tune."""
    weights = ckpt.load_tensors(folder)
    if peft_model is not None:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(peft_model, weights)
        return
    unexpected = model.load_state_dict(weights, strict=False).unexpected_keys
    if unexpected:
        raise ConfigError(f"{folder} holds weights this model lacks ({unexpected[0]}, …); use a new out=", key="out")


def start(acc: Any, module: torch.nn.Module, optimizer: Any, scheduler: Any, family: Trainable, trainer: Any,
          precision: str, run_dir: Path, resume_from: Path | None) -> TrainState:
    """Prepare the trained module and its optimiser for the device(s), add EMA and the NaN guard, then restore the
    checkpoint `resume_from` (optimiser, schedule, counters, RNG) or, on several ranks, give each its own dropout."""
    model, optimizer = acc.prepare(module, optimizer)
    named = {n: p for n, p in module.named_parameters() if p.requires_grad}
    state = TrainState(
        acc=acc, model=model, optimizer=optimizer, scheduler=scheduler, family=family, trainer=trainer,
        run_dir=run_dir, precision=precision, guard=NanGuard(trainer.max_bad_steps, fp16=precision == "fp16"),
        metrics=MetricsLog(run_dir / "metrics.jsonl"),
        ema=EMA(named, trainer.ema_decay) if trainer.ema_decay > 0 else None,
    )
    if resume_from is not None:
        resume(state, resume_from)
    elif state.world > 1:
        # identical initial weights on every rank, then different dropout
        torch.manual_seed(trainer.seed + 1000 * state.rank)
    if state.main:
        state.metrics.truncate_after(state.step)
    return state


def resume(state: TrainState, folder: Path) -> None:
    """Restore what `save_checkpoint` wrote besides the weights: optimiser, scheduler, loss scaler, EMA, guard
    counters, step, best validation loss, and this rank's RNG states (restored last)."""
    saved = ckpt.read_state(folder)
    check_world(folder, saved, world=state.world, fsdp=state.fsdp)
    opt_file = folder / f"optimizer-rank{state.rank}.pt"
    opt_state = torch.load(opt_file, weights_only=True) if opt_file.is_file() else ckpt.load_optimizer(folder)
    state.optimizer.load_state_dict(opt_state)
    state.scheduler.load_state_dict(saved["scheduler"])
    if state.acc.scaler is not None and saved.get("scaler"):
        state.acc.scaler.load_state_dict(saved["scaler"])
    if state.ema is not None:
        state.ema.load_state_dict(ckpt.load_tensors(folder, "ema"))
    state.guard.load(saved.get("guard", {}))
    state.step, state.best = int(saved["step"]), saved.get("best_valid_loss")
    saved_world = int(saved.get("world_size", state.world))
    state.data_position = int(saved.get("data_position", state.step * state.global_batch))
    was = int(saved.get("global_batch", state.global_batch // state.world * saved_world))
    if (saved_world != state.world or was != state.global_batch) and state.main:
        per_accum = state.trainer.batch_size * state.world
        keep = was // per_accum if was % per_accum == 0 else 0
        print(f"note: resumed on {state.world} process{'es' if state.world > 1 else ''} a run saved on {saved_world}: "
              f"training continues at sample {state.data_position} of the same stream, " + (
                  f"with the global batch of {was} windows" if was == state.global_batch else
                  f"but a step now takes {state.global_batch} windows instead of {was}"
                  + (f" (trainer.grad_accum={keep} keeps {was})" if keep else "")), flush=True)
    if not ckpt.load_rng(folder, state.rank):
        # a rank the checkpoint did not have: its own dropout stream, a function of the seed, rank and step
        torch.manual_seed(state.trainer.seed + 1000 * state.rank + state.step)


def check_world(folder: Path, saved: dict[str, Any], *, world: int, fsdp: bool) -> None:
    """Refuse a resume that cannot continue: an FSDP checkpoint keeps one optimiser shard per rank, so it resumes
    on the number of processes that wrote it and under FSDP only. Data-parallel checkpoints resume on any."""
    sharded = sorted(folder.glob("optimizer-rank*.pt"))
    saved_world = int(saved.get("world_size", world))
    if sharded and (not fsdp or saved_world != world):
        now = f"{world} process{'es' if world > 1 else ''}" + (" under FSDP" if fsdp else " without FSDP")
        raise ConfigError(
            f"{folder} was saved by an FSDP run on {saved_world} processes, whose optimiser state is sharded per "
            f"rank; this run has {now}. Launch it as it was (accelerate launch --config_file <the FSDP config> "
            f"--num_processes {saved_world} …) or start a new out=", key="out")
    if fsdp and not sharded:
        raise ConfigError(f"{folder} was saved without FSDP; resuming it under FSDP is not supported: launch it "
                          "without the FSDP config or start a new out=", key="out")


# ---- one optimiser step ----------------------------------------------------------------------------------------


def train_step(state: TrainState, batches: list[dict[str, Any]]) -> StepResult:
    """One optimiser step over this rank's micro-batches: forward and backward of each (gradients synchronised
    across ranks on the last only), normalised by the terms of the whole global batch so that accumulation equals
    one large batch; then clip, NaN guard, optimiser and scheduler step, EMA."""
    acc, t = state.acc, state.trainer
    done = state.step + 1
    n_tokens = reduce_sum(acc, sum(state.family.count(b) for b in batches))
    scale = loss_scale(int(n_tokens), state.world)
    state.model.train()
    loss_sum = torch.zeros((), device=state.device)
    for i, batch in enumerate(batches):
        with acc.no_sync(state.model) if i < len(batches) - 1 else contextlib.nullcontext():
            loss_sum += _backward(state, batch, scale)
    loss = reduce_sum(acc, float(loss_sum)) / n_tokens
    grad_norm = float(acc.clip_grad_norm_(state.params, t.grad_clip if t.grad_clip > 0 else float("inf")))
    lr = state.scheduler.get_last_lr()[0]
    ok = state.guard.check(loss, grad_norm, done)
    if ok or state.precision == "fp16":  # fp16: the loss scaler itself skips a step whose gradients overflowed
        state.optimizer.step()
    with warnings.catch_warnings():  # a skipped first step is not the ordering mistake torch warns about
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)`")
        state.scheduler.step()
    state.optimizer.zero_grad(set_to_none=True)
    if state.ema is not None and ok and done % t.ema_every == 0:
        state.ema.update()
    state.step = done
    state.data_position += state.global_batch
    return StepResult(loss=loss, grad_norm=grad_norm, lr=lr, tokens=int(n_tokens), applied=ok)


def _backward(state: TrainState, batch: dict[str, Any], scale: float) -> torch.Tensor:
    """Forward and backward of one training micro-batch; returns its loss sum, detached.

    The loss tensor must not outlive this call: it holds the step's autograd graph, thousands of small
    nodes allocated in between the activations, which would pin the freed activation memory into pieces
    the next step cannot reuse, so the heap would grow by about one step's activations.
    """
    s = state.family.loss_sum(state.model, batch, train=True)
    state.acc.backward(s * scale)
    return s.detach()


# ---- evaluation ------------------------------------------------------------------------------------------------


def in_batches(windows: Sequence[Any], size: int, collate: Callable[[list[Any]], dict[str, Any]]
               ) -> Iterator[dict[str, Any]]:
    """`windows` in order, `size` at a time, each group collated into a batch."""
    for i in range(0, len(windows), size):
        yield collate([windows[j] for j in range(i, min(i + size, len(windows)))])


def validate(state: TrainState, batches: Iterable[dict[str, Any]]) -> float:
    """Mean loss per counted term over held-out batches, in eval mode without condition dropout (every rank
    runs the same batches)."""
    state.model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in batches:
            total += float(state.family.loss_sum(state.model, batch, train=False))
            count += state.family.count(batch)
    return total / max(count, 1)


def write_samples(state: TrainState) -> None:
    """The fixed prompts with a fixed seed: audio under <out>/samples/step-XXXXXXX/, and to the logger."""
    from tunekit.atomic import write_json
    from tunekit.audio.io import write_audio

    if not state.prompts:
        return
    # Under FSDP every rank must take part in each forward (the layers all-gather their shards), so all
    # ranks generate the same thing in lock-step; otherwise the main process generates alone.
    if state.main or state.fsdp:
        with state.acc.autocast():
            audio, rate = state.family.generate(state.prompts)
    if state.main:
        folder = state.run_dir / "samples" / ckpt.step_name(state.step)
        for i, a in enumerate(audio):
            write_audio(folder / f"{i:02d}.wav", a, rate, subtype="FLOAT")
        write_json(folder / "prompts.json", {"step": state.step, "seed": state.trainer.seed, "prompts": state.prompts})
        state.logger.log_samples([(p, a, rate) for p, a in zip(state.prompts, audio)], state.step)
    state.acc.wait_for_everyone()


# ---- checkpoints -----------------------------------------------------------------------------------------------


def save_checkpoint(state: TrainState, last_loss: float | None) -> None:
    """Checkpoint of step `state.step`: trained weights, EMA, optimiser, scheduler/scaler/RNG/counters, written
    into a temporary folder that is renamed into place when complete (every rank takes part)."""
    acc, done = state.acc, state.step
    tmp = state.run_dir / ckpt.CHECKPOINTS / f".tmp-{ckpt.step_name(done)}"
    if state.main:
        ckpt.begin(state.run_dir, done)
    acc.wait_for_everyone()
    ckpt.save_rng(tmp, state.rank)
    full_state = acc.get_state_dict(state.model)  # gathers the shards under FSDP
    if state.fsdp:
        torch.save(state.optimizer.state_dict(), tmp / f"optimizer-rank{state.rank}.pt")
    if state.main:
        ckpt.save_tensors(state.family.trained_weights(full_state), tmp)
        if state.ema is not None:
            ckpt.save_tensors(state.ema.state_dict(), tmp, "ema")
        if not state.fsdp:
            ckpt.save_optimizer(tmp, state.optimizer.state_dict())
    acc.wait_for_everyone()
    if state.main:
        ckpt.finish(tmp, {
            "step": done, "data_position": state.data_position, "world_size": state.world,
            "global_batch": state.global_batch,
            "train_loss": last_loss, "scheduler": state.scheduler.state_dict(),
            "scaler": acc.scaler.state_dict() if acc.scaler else None, "guard": state.guard.state(),
            "best_valid_loss": state.best,
        }, state.trainer.keep_last)
    acc.wait_for_everyone()


# ---- metrics ---------------------------------------------------------------------------------------------------


def run_steps(state: TrainState, batches: Iterator[dict[str, Any]], validation: Callable[[], Iterable[dict[str, Any]]],
              epoch_windows: int) -> None:
    """The loop every family trains with, from `state.step` to trainer.max_steps: one optimiser step over
    grad_accum micro-batches from `batches`, logged; every eval_every steps (and at the end) the validation loss
    over `validation()` and the fixed-prompt samples; every save_every steps (and at the end) a checkpoint."""
    t = state.trainer
    log = StepLog(state, epoch_windows)
    while state.step < t.max_steps:
        started, cpu_started = time.perf_counter(), time.process_time()
        reset_step_rss()
        micro = [next(batches) for _ in range(t.grad_accum)]
        data_s = time.perf_counter() - started
        result = train_step(state, micro)
        log.step(result, started, cpu_started, data_s)
        done = state.step
        if t.eval_every and (done % t.eval_every == 0 or done == t.max_steps):
            valid_loss = validate(state, validation())
            write_samples(state)
            log.validation(valid_loss)
        if (t.save_every and done % t.save_every == 0) or done == t.max_steps:
            save_checkpoint(state, result.loss)


class StepLog:
    """Each step's row in metrics.jsonl, and every `log_every` steps the logger's averages and a console line;
    measured the same way for every family. Create it just before the first step (it starts the clocks)."""

    def __init__(self, state: TrainState, epoch_windows: int) -> None:
        self.state = state
        self.epoch_windows = epoch_windows  # training windows in one epoch
        self.timer = StepTimer()
        self.losses: list[float] = []  # losses of the applied steps since the last log line
        if state.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(state.device)

    def step(self, result: StepResult, started: float, cpu_started: float, data_s: float) -> None:
        """Record the step just taken, which began at perf_counter `started` / process_time `cpu_started` and
        waited `data_s` seconds for its batches."""
        state, t, done = self.state, self.state.trainer, self.state.step
        self.timer.add(result.tokens, data_s)
        if result.applied:
            self.losses.append(result.loss)
        if state.device.type == "cuda":
            torch.cuda.synchronize(state.device)
        row = {"step": done, "loss": result.loss, "lr": result.lr, "grad_norm": result.grad_norm,
               "tokens": result.tokens, "step_s": time.perf_counter() - started,
               "cpu_s": time.process_time() - cpu_started, "data_s": data_s, "rss_peak_gib": host_rss_gib()[1],
               "epoch": state.data_position / self.epoch_windows, "skipped": not result.applied,
               **state.guard.state()}
        if state.main:
            state.metrics.write(row)
        if state.main and (done % t.log_every == 0 or done == t.max_steps):
            perf = {**self.timer.read(), **peak_memory(state.device)}
            avg = sum(self.losses) / len(self.losses) if self.losses else float("nan")
            state.logger.log({"train/loss": avg, "train/lr": result.lr, "train/grad_norm": result.grad_norm,
                              **{f"perf/{k}": v for k, v in perf.items()},
                              **{f"train/{k}": v for k, v in state.guard.state().items()}}, done)
            print(f"step {done}/{t.max_steps}  loss {avg:.4f}  lr {result.lr:.2e}  grad {result.grad_norm:.3f}  "
                  f"{perf['tokens_per_s']:.0f} tok/s  data {100 * perf['data_wait_frac']:.0f}%", flush=True)
            self.losses = []

    def validation(self, valid_loss: float) -> None:
        """Keep the best validation loss and record this one."""
        state = self.state
        state.best = valid_loss if state.best is None else min(state.best, valid_loss)
        if state.main:
            state.metrics.write({"step": state.step, "valid_loss": valid_loss, "best_valid_loss": state.best})
            state.logger.log({"valid/loss": valid_loss, "valid/best_loss": state.best}, state.step)
            print(f"step {state.step}: valid loss {valid_loss:.4f} (best {state.best:.4f})", flush=True)


def run_summary(state: TrainState) -> dict[str, Any]:
    """The finished run's figures for its model card, read back from metrics.jsonl."""
    rows = state.metrics.rows()

    def last(key: str) -> Any:
        values = [r[key] for r in rows if key in r]
        return values[-1] if values else None

    timed = [r for r in rows if "step_s" in r]
    seconds = sum(r["step_s"] for r in timed)
    return {"step": state.trainer.max_steps, "global_batch": state.global_batch, "world_size": state.world,
            "precision": state.precision, "train_loss": last("loss"), "valid_loss": last("valid_loss"),
            "best_valid_loss": last("best_valid_loss"),
            "tokens_per_s": sum(r["tokens"] for r in timed) / seconds if seconds > 0 else None,
            **state.guard.state()}
