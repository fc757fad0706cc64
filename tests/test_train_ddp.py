"""DDP: two CPU processes (gloo, launched by torchrun) with batch 2 each take the same steps as one process
with batch 4, because the loss is normalised by the token count of all ranks.

The claim is checked where it is exact up to float32 rounding, on the gradient the optimiser receives at
step 1 (after the all-reduce); the 3-step AdamW runs are then compared with bounds that hold on any CPU and
BLAS (`_train_fixtures.assert_same_steps`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from _numerics import assert_close_in_norm, norm_ratio
from _train_fixtures import (
    assert_same_steps, capture_first_step_gradients, make_dataset, step_bounds, torchrun, train_cfg,
)
from safetensors.torch import load_file

from tunekit.train.run import run_train

pytestmark = [pytest.mark.integration, pytest.mark.slow]
COMMON = ("model.dropout=0", "method.dropout=0", "trainer.lr=1e-3", "trainer.grad_clip=0")
STEPS = ("trainer.max_steps=3", "trainer.save_every=2")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, one_torch_thread) -> dict[str, Path]:
    """The same 3 steps on 2 ranks x batch 2 (DDP) and on one process x batch 4, each saving step 1's gradients."""
    root = tmp_path_factory.mktemp("ddp")
    data = make_dataset(root / "prep", codes="motif")  # windows of 100 and 50 frames: the ranks' token counts differ
    proc = torchrun(2, data, root / "ddp", "trainer.batch_size=2", *COMMON, *STEPS, gradients=root / "ddp-grads")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "cpu:0 x 2" in proc.stdout  # really two ranks
    with pytest.MonkeyPatch.context() as mp:
        capture_first_step_gradients(root / "single-grads", 0, mp.setattr)
        assert run_train(train_cfg(data, root / "single", "trainer.batch_size=4", *COMMON, *STEPS)) == 0
    return {"data": data, "ddp": root / "ddp", "ddp_grads": root / "ddp-grads", "single": root / "single",
            "single_grads": root / "single-grads"}


def test_step_one_gradient_is_the_one_process_gradient_of_the_whole_batch(runs, tmp_path, monkeypatch):
    bounds = step_bounds(runs["single"], runs["single_grads"])
    expected = load_file(str(runs["single_grads"] / "grads-rank0.safetensors"))
    for rank in (0, 1):
        got = load_file(str(runs["ddp_grads"] / f"grads-rank{rank}.safetensors"))
        assert_close_in_norm(got, expected, rtol=bounds["gradient_rtol"], what=f"DDP rank {rank}, step-1 gradient")

    # The tolerance catches the bug it is there for: each half of the batch normalised by its own token count
    # (per rank, or here per micro-batch of an accumulated step over the same halves) instead of by the total.
    import tunekit.train.engine as engine
    import tunekit.train.musicgen as trainer

    real, counts = trainer.masked_ce_sum, []

    def own_mean(logits, targets, mask):
        counts.append(int(mask.sum()))
        return real(logits, targets, mask) / mask.sum()

    monkeypatch.setattr(trainer, "masked_ce_sum", own_mean)
    monkeypatch.setattr(engine, "loss_scale", lambda total, world=1: 0.5)  # the two halves' means averaged
    capture_first_step_gradients(tmp_path / "grads", 0, monkeypatch.setattr)
    cfg = train_cfg(runs["data"], tmp_path / "run", "trainer.batch_size=2", "trainer.grad_accum=2", *COMMON,
                    "trainer.max_steps=1")
    assert run_train(cfg) == 0
    assert counts[0] != counts[1], counts  # the halves hold different token counts, so the bug shows
    wrong = load_file(str(tmp_path / "grads" / "grads-rank0.safetensors"))
    off = max(norm_ratio(wrong[k], expected[k]) for k in expected)
    assert off > 10 * bounds["gradient_rtol"], (off, bounds["gradient_rtol"])


def test_two_processes_take_the_steps_of_one_process_with_the_whole_batch(runs):
    assert_same_steps(runs["single"], runs["single_grads"], runs["ddp"], runs["ddp_grads"], what="DDP", ranks=2)
    # every rank saved its RNG state for an exact resume
    names = {p.name for p in (runs["ddp"] / "checkpoints" / "step-0000002").iterdir()}
    assert {"rng-rank0.safetensors", "rng-rank1.safetensors"} <= names
