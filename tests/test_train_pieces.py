"""The trainer's pieces one at a time on the tiny MusicGen (CPU): one optimiser step with accumulation
(`train_step`), the validation loss (`validate`), the samples (`write_samples`), checkpoint save and resume, and
the NaN guard's skip. References go through transformers' own `forward(labels=…)` loss, not tunekit's."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from _numerics import assert_close, assert_close_in_norm, reorder_rtol
from _train_fixtures import ADAM_WEIGHT_RTOL, FRAME_RATE, make_dataset, musicgen_sums, train_cfg

from tunekit.data.tokens import EvalWindows, collate
from tunekit.train import checkpoint as ckpt
from tunekit.train import musicgen as trainer
from tunekit.train.engine import (
    TrainState, in_batches, save_checkpoint, train_step, validate, write_samples,
)
from tunekit.train.guard import TrainingDiverged
from tunekit.train.loss import build_delayed

pytestmark = pytest.mark.usefixtures("one_torch_thread")
NO_DROPOUT = ("model.dropout=0", "method.dropout=0")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """4 training tracks of 2 + 2 + 1 s windows (100 or 50 frames), one held-out track, random codes."""
    return make_dataset(tmp_path_factory.mktemp("prep"))


def _setup(data: Path, out: Path, *overrides: str) -> tuple[Any, TrainState, trainer.Musicgen, trainer.Data]:
    """`trainer.setup` of a tiny CPU run (the checkpoint named, as `run_train` would resolve it)."""
    cfg = train_cfg(data, out, "model.name=facebook/musicgen-small", *overrides)
    return (cfg, *trainer.setup(cfg))


def _hf_loss_sum(family: trainer.Musicgen, batch: dict[str, Any]) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy of `batch` and its token count, through transformers' MusicGen with `labels` (it
    runs T5 itself and builds the decoder inputs from the labels). Its loss is a mean per codebook, then over
    codebooks; every codebook predicts each valid frame once, so loss x tokens is the sum."""
    db = build_delayed(batch["codes"], batch["n_frames"], family.delays, family.pad_id, family.start_id)
    enc = family.tokenizer(batch["captions"], padding=True, truncation=True, max_length=family.max_text_tokens,
                           return_tensors="pt")
    out = family.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], labels=db.hf_labels())
    return out.loss * db.n_tokens, db.n_tokens


def _loss_rtol(cfg: Any, windows: int, tokens: int) -> tuple[float, float]:
    """(loss, gradient) relative tolerances of a step over `windows` windows holding `tokens` tokens."""
    sums = musicgen_sums(cfg.model.name, windows=windows, frames=int(round(cfg.data.crop_seconds * FRAME_RATE)),
                         text_tokens=cfg.data.max_text_tokens, tokens=tokens, lora_r=cfg.method.r)
    return reorder_rtol(*sums["forward"], *sums["loss"]), reorder_rtol(*sums["forward"], *sums["loss"],
                                                                       *sums["backward"])


def _micro_batches(cfg: Any, data: trainer.Data, state: TrainState, steps: int) -> list[list[dict[str, Any]]]:
    batches = iter(trainer.train_loader(cfg, data, state))
    return [[next(batches) for _ in range(cfg.trainer.grad_accum)] for _ in range(steps)]


def _inner(optimizer: Any) -> torch.optim.Optimizer:
    return getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper, or the optimiser itself


def test_train_step_accumulates_to_the_mean_over_both_micro_batches_and_moves_only_lora(data, tmp_path):
    cfg, state, family, d = _setup(data, tmp_path / "run", "trainer.batch_size=2", "trainer.grad_accum=2",
                                   "trainer.grad_clip=0", "trainer.cond_dropout=0", *NO_DROPOUT)
    (micro,) = _micro_batches(cfg, d, state, 1)
    n_frames = [int(n) for b in micro for n in b["n_frames"]]
    assert len(set(int(b["n_frames"].sum()) for b in micro)) == 2, n_frames  # unequal halves: means differ

    # Reference: transformers' loss of the whole accumulated batch, and its gradient.
    trained = {n: p for n, p in state.model.named_parameters() if p.requires_grad}
    family.model.eval()  # no dropout anywhere (T5 included), so train and eval mode compute the same
    sums = [_hf_loss_sum(family, b) for b in micro]
    total = sum(n for _, n in sums)
    ref_loss = sum(s for s, _ in sums) / total
    ref_loss.backward()
    ref_grads = {n: p.grad.clone() for n, p in trained.items()}
    for p in trained.values():
        p.grad = None

    captured: dict[str, torch.Tensor] = {}
    names = {id(p): n for n, p in trained.items()}

    def capture(optimizer: Any, args: Any, kwargs: Any) -> None:
        captured.update({names[id(p)]: p.grad.clone() for g in optimizer.param_groups for p in g["params"]})

    _inner(state.optimizer).register_step_pre_hook(capture)
    before = {n: p.detach().clone() for n, p in family.model.named_parameters()}
    result = train_step(state, micro)

    loss_rtol, grad_rtol = _loss_rtol(cfg, windows=4, tokens=total)
    assert result.applied and state.step == 1 and result.tokens == total == 4 * sum(n_frames)
    assert_close(result.loss, ref_loss.item(), atol=loss_rtol * abs(ref_loss.item()), what="step loss")
    assert_close_in_norm(captured, ref_grads, rtol=grad_rtol, what="gradient the optimiser received")
    after = dict(family.model.named_parameters())
    lora = {n for n in after if ".lora_" in n}
    assert {n.removeprefix("base_model.model.") for n in lora} == set(trained)
    changed = {n for n, p in after.items() if not torch.equal(p.detach(), before[n])}
    assert changed <= lora, sorted(changed - lora)[:5]  # frozen weights are never touched
    assert {n for n in lora if ".lora_B." in n} <= changed  # B starts at zero: only it has a gradient at step 1
    assert all(p.grad is None for p in trained.values())  # zeroed for the next step


def test_validate_is_the_token_mean_over_held_out_windows_in_eval_mode(data, tmp_path):
    # Dropout on: validate must switch to eval mode to reproduce the reference. The frozen heads are sharpened so
    # that windows' losses differ: an untrained model puts every window near log(2048), where the token mean and
    # a mean of batch means agree to within the tolerance.
    cfg, state, family, d = _setup(data, tmp_path / "run", "model.dropout=0.5", "method.dropout=0.5")
    with torch.no_grad():
        for head in family.model.decoder.lm_heads:
            head.weight.mul_(50)
    windows = EvalWindows(d.tokens, d.valid_rows, d.crop)
    assert [windows[i].n_frames for i in range(len(windows))] == [100, 100, 50]
    state.model.train()
    got = validate(state, in_batches(windows, 2, collate))  # batches of 2 + 1 windows

    family.model.eval()
    with torch.no_grad():
        alone = [_hf_loss_sum(family, collate([windows[i]])) for i in range(len(windows))]
    tokens = sum(n for _, n in alone)
    expected = float(sum(s for s, _ in alone)) / tokens
    loss_rtol, _ = _loss_rtol(cfg, windows=1, tokens=tokens)
    tolerance = loss_rtol * expected
    assert_close(got, expected, atol=tolerance, what="validation loss")
    assert all(p.grad is None for p in state.model.parameters())

    # The tolerance tells the right answer from a mean of the batches' means and from a loss with dropout on.
    first = float(alone[0][0] + alone[1][0]) / (alone[0][1] + alone[1][1])
    batch_means = (first + float(alone[2][0]) / alone[2][1]) / 2
    state.model.train()
    with torch.no_grad():
        dropped = sum(float(family.loss_sum(state.model, collate([w]), train=False)) for w in windows) / tokens
    for wrong, what in ((batch_means, "mean of batch means"), (dropped, "dropout on")):
        assert abs(wrong - expected) > 5 * tolerance, (what, wrong, expected, tolerance)


class _Recorder:
    """A logger that keeps what it is given."""

    def __init__(self) -> None:
        self.samples: list[tuple[list[tuple[str, Any, int]], int]] = []

    def log_samples(self, samples: list[tuple[str, Any, int]], step: int) -> None:
        self.samples.append((samples, step))


def test_write_samples_writes_the_seeded_audio_of_each_prompt(data, tmp_path):
    cfg, state, family, _ = _setup(data, tmp_path / "run", "eval.n_prompts=1", "eval.seconds=0.3")
    assert state.prompts == ["cinematic strings and brass, variant 0"]  # the held-out track (4)'s first caption
    state.logger, state.step = _Recorder(), 7
    write_samples(state)
    folder = tmp_path / "run" / "samples" / "step-0000007"
    assert json.loads((folder / "prompts.json").read_text()) == {"step": 7, "seed": cfg.trainer.seed,
                                                                 "prompts": state.prompts}
    # The same code on the same data in one thread: generating again gives the same floats, stored exactly.
    with state.acc.autocast():
        audio, rate = family.generate(state.prompts)
    written, written_rate = sf.read(str(folder / "00.wav"), dtype="float32", always_2d=True)
    assert written_rate == rate == 32000 and written.shape == (round(0.3 * rate), 1)
    np.testing.assert_array_equal(written.T, audio[0])
    (samples, step), = state.logger.samples
    assert step == 7 and [p for p, _, _ in samples] == state.prompts and samples[0][2] == rate

    state.prompts, state.step = [], 8
    write_samples(state)  # no prompts: nothing to write
    assert not (tmp_path / "run" / "samples" / "step-0000008").exists()


def _rng_states() -> tuple[Any, ...]:
    return torch.get_rng_state(), random.getstate(), np.random.get_state()


def test_checkpoint_then_resume_continues_as_if_never_stopped(data, tmp_path):
    # Dropout (decoder, LoRA) and condition dropout on: the next step depends on every RNG.
    run = tmp_path / "run"
    overrides = ("trainer.max_steps=6", "trainer.batch_size=1", "trainer.grad_accum=2", "trainer.lr=1e-3",
                 "trainer.ema_decay=0.5", "trainer.ema_every=1", "trainer.cond_dropout=0.3")
    cfg, a, family_a, d = _setup(data, run, *overrides)
    steps = _micro_batches(cfg, d, a, 3)
    for micro in steps[:2]:
        second = train_step(a, micro)
    saved = {"rng": _rng_states(), "optimizer": copy.deepcopy(_inner(a.optimizer).state_dict()),
             "scheduler": a.scheduler.state_dict(), "ema": {k: v.clone() for k, v in a.ema.state_dict().items()}}
    save_checkpoint(a, second.loss)
    w2 = {n: p.detach().clone() for n, p in a.model.named_parameters() if p.requires_grad}
    third = train_step(a, steps[2])
    w3 = {n: p.detach().clone() for n, p in a.model.named_parameters() if p.requires_grad}

    folder = ckpt.latest_checkpoint(run)
    assert folder is not None and folder.name == "step-0000002"
    state = json.loads((folder / "state.json").read_text())
    assert state["step"] == 2 and state["data_position"] == 4 and state["train_loss"] == second.loss
    assert state["guard"] == {"skipped_nonfinite": 0, "skipped_fp16": 0, "bad_streak": 0}
    from peft import get_peft_model_state_dict

    assert set(ckpt.load_tensors(folder)) == set(get_peft_model_state_dict(family_a.peft_model))

    # A new process's setup on the same out= resumes: states restored byte for byte, so exact comparisons.
    cfg, b, _, d = _setup(data, run, *overrides)
    assert b.step == 2
    rng = _rng_states()
    assert torch.equal(rng[0], saved["rng"][0]) and rng[1] == saved["rng"][1]
    assert all(np.array_equal(x, y) for x, y in zip(rng[2], saved["rng"][2]))
    assert b.scheduler.state_dict() == saved["scheduler"]
    opt = _inner(b.optimizer).state_dict()
    assert opt["param_groups"] == saved["optimizer"]["param_groups"]
    for i, s in saved["optimizer"]["state"].items():
        assert all(torch.equal(opt["state"][i][k], v) for k, v in s.items()), i
    assert all(torch.equal(b.ema.state_dict()[k], v) for k, v in saved["ema"].items())
    (micro,) = _micro_batches(cfg, d, b, 1)
    assert all(torch.equal(x["codes"], y["codes"]) and x["captions"] == y["captions"] for x, y in zip(micro, steps[2]))
    resumed = train_step(b, micro)

    loss_rtol, _ = _loss_rtol(cfg, windows=2, tokens=third.tokens)
    assert_close(resumed.loss, third.loss, atol=loss_rtol * abs(third.loss), what="step-3 loss after resume")
    # Adam-updated weights: compared relative to the step's update, never bitwise.
    after = {n: p.detach() for n, p in b.model.named_parameters() if p.requires_grad}
    delta = torch.cat([(after[n] - w3[n]).ravel() for n in w3])
    update = torch.cat([(w3[n] - w2[n]).ravel() for n in w3])
    ratio = float(delta.norm() / update.norm())
    assert ratio <= ADAM_WEIGHT_RTOL, f"resumed weights differ by {ratio:.3g} of the step's update"


class _NanLoss:
    """The family, except that every loss is NaN (as a corrupt batch or an overflow would make it)."""

    def __init__(self, family: trainer.Musicgen) -> None:
        self.family = family

    def loss_sum(self, model: torch.nn.Module, batch: dict[str, Any], train: bool) -> torch.Tensor:
        return self.family.loss_sum(model, batch, train) * float("nan")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.family, name)


def test_a_nan_step_is_skipped_and_counted_and_a_streak_stops(data, tmp_path):
    cfg, state, family, d = _setup(data, tmp_path / "run", "trainer.max_bad_steps=2", "trainer.ema_decay=0.5",
                                   "trainer.ema_every=1", "trainer.warmup=2")
    steps = _micro_batches(cfg, d, state, 4)
    trained = {n: p for n, p in state.model.named_parameters() if p.requires_grad}
    before = {n: p.detach().clone() for n, p in trained.items()}
    shadow = {k: v.clone() for k, v in state.ema.state_dict().items()}

    state.family = _NanLoss(family)
    bad = train_step(state, steps[0])
    assert not bad.applied and np.isnan(bad.loss) and state.step == 1
    assert state.guard.state() == {"skipped_nonfinite": 1, "skipped_fp16": 0, "bad_streak": 1}
    assert all(torch.equal(p.detach(), before[n]) for n, p in trained.items())  # no update, no weight decay
    assert all(torch.equal(state.ema.state_dict()[k], v) for k, v in shadow.items())
    assert all(p.grad is None for p in trained.values())  # the NaN gradients are dropped
    assert state.scheduler.last_epoch == 1  # the schedule moves on: step 2 uses step 2's learning rate

    state.family = family
    good = train_step(state, steps[1])
    assert good.applied and np.isfinite(good.loss) and good.lr == pytest.approx(cfg.trainer.lr)  # warmup 2 of 2
    assert state.guard.state() == {"skipped_nonfinite": 1, "skipped_fp16": 0, "bad_streak": 0}
    assert any(not torch.equal(p.detach(), before[n]) for n, p in trained.items())

    state.family = _NanLoss(family)
    train_step(state, steps[2])
    with pytest.raises(TrainingDiverged, match="2 consecutive steps with a non-finite loss"):
        train_step(state, steps[3])
