"""Checkpoints and resume: a run killed with SIGKILL and re-run reaches the same weights and losses as an
uninterrupted run; a kill during a checkpoint write leaves the previous checkpoint usable."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from _numerics import assert_close
from _train_fixtures import kill_after_checkpoint, make_dataset, train_cfg, train_process
from safetensors.torch import load_file

from tunekit.train import checkpoint as ckpt
from tunekit.train.run import run_train

# Dropout (decoder and LoRA) and condition dropout stay on: resuming must restore every RNG exactly.
OVERRIDES = ("trainer.max_steps=14", "trainer.save_every=2", "trainer.keep_last=2", "trainer.lr=1e-3")


@pytest.mark.integration
def test_sigkill_and_rerun_matches_an_uninterrupted_run(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the child runs with one thread too (`child_env`): the same float reduction order
    try:
        data = make_dataset(tmp_path / "prep", codes="motif")
        ref = tmp_path / "uninterrupted"
        assert run_train(train_cfg(data, ref, *OVERRIDES)) == 0

        run = tmp_path / "killed"
        output = kill_after_checkpoint(train_process(data, run, *OVERRIDES), run, 4)  # killed mid-run
        resume_from = ckpt.latest_checkpoint(run)  # step 4, or a later one if the run got further first
        assert resume_from is not None and not (run / "adapter").exists(), output
        killed_at = max(r["step"] for r in _rows(run))
        assert 4 <= int(json.loads((resume_from / "state.json").read_text())["step"]) <= killed_at < 14

        assert run_train(train_cfg(data, run, *OVERRIDES)) == 0  # the same command resumes
    finally:
        torch.set_num_threads(threads)

    # Unlike runs that sum in other orders (DDP, accumulation), a resumed run repeats the uninterrupted one:
    # the same code on the same machine with one thread in every process (this one, and the child, whose
    # `child_env` pins OpenMP, MKL and OpenBLAS), from states restored byte for byte. Its floats are bitwise
    # equal; the tolerance, a thousandth of one step (lr 1e-3), is slack only. A state not restored (an RNG,
    # the optimiser moments, the schedule, the data position) moves weights by a good part of a step and
    # losses by far more than 1e-6.
    a = load_file(str(ref / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert_close(b[k], a[k], atol=1e-6, what=k)
    ref_rows, rows = _rows(ref), _rows(run)
    assert [r["step"] for r in rows] == list(range(1, 15))  # rows after the checkpoint were rewritten, not doubled
    assert_close([r["loss"] for r in rows], [r["loss"] for r in ref_rows], atol=1e-6, what="losses by step")


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if "loss" in line]


def test_interrupted_checkpoint_write_leaves_the_previous_one(tmp_path):
    tmp = ckpt.begin(tmp_path, 2)
    ckpt.save_tensors({"w": torch.ones(3)}, tmp)
    first = ckpt.finish(tmp, {"step": 2}, keep_last=3)
    # a second checkpoint killed half-way: files written, state.json never
    partial = ckpt.begin(tmp_path, 4)
    ckpt.save_tensors({"w": torch.zeros(3)}, partial)
    assert ckpt.latest_checkpoint(tmp_path) == first
    torch.testing.assert_close(ckpt.load_tensors(first)["w"], torch.ones(3))
    ckpt.remove_partial(tmp_path)
    assert not partial.exists() and first.exists()


def test_keep_last_and_rewriting_a_step(tmp_path):
    for step in (1, 2, 3, 4):
        tmp = ckpt.begin(tmp_path, step)
        ckpt.save_tensors({"w": torch.full((2,), float(step))}, tmp)
        ckpt.finish(tmp, {"step": step}, keep_last=2)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [3, 4]
    tmp = ckpt.begin(tmp_path, 4)  # a resumed run writing the same step again
    ckpt.save_tensors({"w": torch.full((2,), 9.0)}, tmp)
    ckpt.finish(tmp, {"step": 4}, keep_last=2)
    assert ckpt.load_tensors(ckpt.latest_checkpoint(tmp_path))["w"].tolist() == [9.0, 9.0]


def test_sharded_weights_round_trip(tmp_path):
    tensors = {f"layer{i}": torch.randn(64, 64) for i in range(5)}
    ckpt.save_tensors(tensors, tmp_path, max_shard_bytes=3 * 64 * 64 * 4)
    assert len(list(tmp_path.glob("weights-*.safetensors"))) == 2
    back = ckpt.load_tensors(tmp_path)
    for k, v in tensors.items():
        assert torch.equal(back[k], v)


def test_rng_states_round_trip(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    ckpt.save_rng(tmp_path, rank=0)
    expected = (random.random(), np.random.rand(), torch.rand(3))
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    assert ckpt.load_rng(tmp_path, rank=0)
    got = (random.random(), np.random.rand(), torch.rand(3))
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])
