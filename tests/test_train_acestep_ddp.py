"""ACE-Step DDP: two CPU processes (gloo, launched by torchrun) with batch 2 each take the steps of one process
with batch 2 and two accumulated micro-batches, because both read the same samples of the stream (a window, its
latent draw, noise, time and condition dropout are functions of the seed and the sample's position) and the loss
is normalised by the latent elements of all ranks. Logging and the model card come from rank 0 alone, and a
checkpoint resumes on another number of processes where the stream left off.

Checked on the step-1 gradient (float32 rounding only), the losses and the exported adapters, with the bounds of
`_train_fixtures` (they hold on any CPU and BLAS)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from _acestep_fixtures import acestep_cfg, make_latent_dataset, torchrun_acestep
from _numerics import assert_close, assert_close_in_norm, norm_ratio, reorder_rtol
from _train_fixtures import assert_same_adapters, capture_first_step_gradients, loss_tolerances
from safetensors.torch import load_file

from tunekit.data.tokens import StepBatches
from tunekit.errors import ConfigError
from tunekit.train.engine import check_world

pytestmark = [pytest.mark.integration, pytest.mark.slow]
COMMON = ("trainer.lr=1e-3", "trainer.grad_clip=0", "method.dropout=0", "trainer.cond_dropout=0.3",
          "trainer.max_steps=4", "trainer.save_every=2", "trainer.batch_size=2")
ACESTEP = "tunekit.train.acestep"
# Sums along one tiny DiT forward (as in test_train_acestep): patchify conv, per layer q/k/v, attention, output
# projection for self- and cross-attention, the MLP.
DIT_SUMS = (48, *(64, 64, 140, 64, 64, 64, 140, 64, 64, 128) * 2, 64)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, one_torch_thread) -> dict[str, Path]:
    """The same 4 steps on one process (2 x 2 accumulated) and on 2 ranks x 2 (DDP), each saving step 1's
    gradients; then the one-process run's step-2 checkpoint resumed on 2 ranks."""
    from tunekit.train.acestep import train_acestep

    root = tmp_path_factory.mktemp("acestep-ddp")
    data = make_latent_dataset(root / "prep")
    with pytest.MonkeyPatch.context() as mp:
        capture_first_step_gradients(root / "single-grads", 0, mp.setattr, trainer_module=ACESTEP)
        assert train_acestep(acestep_cfg(data, root / "single", "trainer.grad_accum=2", *COMMON)) == 0
    ddp = torchrun_acestep(2, data, root / "ddp", "trainer.grad_accum=1", *COMMON, gradients=root / "ddp-grads")
    assert ddp.returncode == 0, (ddp.stdout + ddp.stderr)[-3000:]

    # A run killed after its step-2 checkpoint (what the kill tests produce), resumed on two processes.
    resumed = root / "resumed"
    shutil.copytree(root / "single", resumed)
    for name in ("adapter", "merged", "README.md"):
        shutil.rmtree(resumed / name, ignore_errors=True) if (resumed / name).is_dir() else (resumed / name).unlink(
            missing_ok=True)
    shutil.rmtree(resumed / "checkpoints" / "step-0000004")
    again = torchrun_acestep(2, data, resumed, "trainer.grad_accum=1", *COMMON)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    return {"data": data, "single": root / "single", "single_grads": root / "single-grads", "ddp": root / "ddp",
            "ddp_grads": root / "ddp-grads", "ddp_out": ddp.stdout + ddp.stderr, "resumed": resumed,
            "resumed_out": again.stdout + again.stderr}


def _loss_rows(run: Path) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


def _bounds(ref: Path, grads: Path) -> dict:
    """float32 reordering bounds for a step of `ref`: the DiT forward, the loss over the step's latent elements,
    then the backward (the forward's sums again and each weight gradient's sum over the step's tokens)."""
    elements = _loss_rows(ref)[0]["tokens"]  # latent elements of the step; a weight gradient sums over fewer rows
    return {
        "gradient_rtol": reorder_rtol(*DIT_SUMS, elements, *DIT_SUMS, elements),
        "loss_rtol": reorder_rtol(*DIT_SUMS, elements),
        "n_params": sum(v.numel() for v in load_file(str(grads / "grads-rank0.safetensors")).values()),
    }


def _adapter(run: Path) -> dict:
    """The exported diffusers LoRA, named as the trained module's parameters."""
    tensors = load_file(str(run / "adapter" / "pytorch_lora_weights.safetensors"))
    return {k.removeprefix("transformer.").replace(".weight", ".default.weight"): v for k, v in tensors.items()}


def _same_steps(ref: Path, run: Path, w0: dict, bounds: dict, what: str, first: int = 1) -> None:
    ref_rows, rows = _loss_rows(ref), _loss_rows(run)
    assert [r["step"] for r in rows] == [r["step"] for r in ref_rows] == [1, 2, 3, 4], what
    assert [r["tokens"] for r in rows] == [r["tokens"] for r in ref_rows], f"{what}: other samples per step"
    tols = loss_tolerances(ref_rows, loss_rtol=bounds["loss_rtol"], n_params=bounds["n_params"],
                           betas=(0.9, 0.999))
    assert_close([r["loss"] for r in rows][first - 1:], [r["loss"] for r in ref_rows][first - 1:],
                 atol=np.array(tols[first - 1:]), what=f"{what}: losses by step")
    assert_same_adapters(_adapter(ref), _adapter(run), w0, what=what)


def test_step_one_gradient_of_each_rank_is_the_one_process_gradient(runs):
    bounds = _bounds(runs["single"], runs["single_grads"])
    expected = load_file(str(runs["single_grads"] / "grads-rank0.safetensors"))
    for rank in (0, 1):
        got = load_file(str(runs["ddp_grads"] / f"grads-rank{rank}.safetensors"))
        assert got.keys() == expected.keys()
        assert_close_in_norm(got, expected, rtol=bounds["gradient_rtol"], what=f"DDP rank {rank}, step-1 gradient")
    # The bound is far below what a wrong normalisation gives: each rank's own mean (x2 here) is rejected.
    off = max(norm_ratio(2 * expected[k], expected[k]) for k in expected)
    assert off > 100 * bounds["gradient_rtol"], (off, bounds["gradient_rtol"])


def test_two_processes_take_the_steps_of_one_and_rank_zero_alone_logs(runs):
    w0 = load_file(str(runs["single_grads"] / "weights-rank0.safetensors"))
    _same_steps(runs["single"], runs["ddp"], w0, _bounds(runs["single"], runs["single_grads"]), "DDP")
    out = runs["ddp_out"]
    assert "cpu:0 x 2" in out, out[-2000:]  # really two ranks
    assert out.count("done: ") == 1 and out.count("trainable") == 1, out[-3000:]  # plan and card from rank 0
    assert (runs["ddp"] / "README.md").is_file()
    names = {p.name for p in (runs["ddp"] / "checkpoints" / "step-0000004").iterdir()}
    assert {"rng-rank0.safetensors", "rng-rank1.safetensors"} <= names
    state = json.loads((runs["ddp"] / "checkpoints" / "step-0000004" / "state.json").read_text())
    assert (state["world_size"], state["global_batch"], state["data_position"]) == (2, 4, 16)


def test_a_one_process_checkpoint_resumes_on_two_where_the_stream_left_off(runs):
    out = runs["resumed_out"]
    assert "resumed on 2 processes a run saved on 1: training continues at sample 8 of the same stream, with " \
           "the global batch of 4 windows" in out, out[-3000:]
    w0 = load_file(str(runs["single_grads"] / "weights-rank0.safetensors"))
    # steps 1-2 are the one-process run's own rows; 3-4 were taken by two ranks after the resume
    _same_steps(runs["single"], runs["resumed"], w0, _bounds(runs["single"], runs["single_grads"]), "resumed",
                first=3)
    state = json.loads((runs["resumed"] / "checkpoints" / "step-0000004" / "state.json").read_text())
    assert (state["world_size"], state["data_position"]) == (2, 16)


def test_the_stream_continues_across_a_change_of_world_size():
    """Two steps of 2 x 2 on one process, then two ranks with 2 x 1 and then one with 2 x 3 read every sample
    once, in order."""
    first = [i for b in StepBatches(0, 2, 2, 2) for i in b]
    second = sorted(i for r in (0, 1) for b in StepBatches(2, 4, 2, 1, world=2, rank=r, start_sample=8) for i in b)
    third = [i for b in StepBatches(4, 5, 2, 3, start_sample=16) for i in b]
    assert first + second + third == list(range(22))


def test_an_fsdp_checkpoint_resumes_only_as_it_was_saved(tmp_path):
    for rank in (0, 1):
        (tmp_path / f"optimizer-rank{rank}.pt").write_bytes(b"")
    saved = {"step": 2, "world_size": 2}
    check_world(tmp_path, saved, world=2, fsdp=True)
    for world, fsdp in ((1, True), (4, True), (2, False)):
        with pytest.raises(ConfigError) as err:
            check_world(tmp_path, saved, world=world, fsdp=fsdp)
        assert "sharded per rank" in str(err.value) and "--num_processes 2" in str(err.value), str(err.value)
        assert err.value.key == "out"
    check_world(tmp_path / "none", saved, world=3, fsdp=False)  # data-parallel checkpoints resume on any size
    with pytest.raises(ConfigError, match="saved without FSDP"):
        check_world(tmp_path / "none", saved, world=2, fsdp=True)


@pytest.mark.parametrize("family, method", [("acestep", "full"), ("acestep", "lora"), ("musicgen", "full"),
                                            ("musicgen", "lora")])
def test_under_fsdp_the_export_rebuilds_the_trained_model_from_the_final_checkpoint(
        family, method, tmp_path, monkeypatch, one_torch_thread):
    """Under FSDP a rank holds a shard of the weights only, so the export loads the base model again and the final
    checkpoint's full weights into it. Forced here on one process (FSDP itself needs GPUs in accelerate): the
    files equal those of the run's in-memory model."""
    import torch

    from tunekit.train.engine import TrainState

    if family == "acestep":
        from tunekit.train.acestep import train_acestep as train

        data = make_latent_dataset(tmp_path / "prep")
        def cfg(out):
            return acestep_cfg(data, out, f"method={method}", "trainer.max_steps=2", "trainer.lr=1e-3")
        folder = "model/transformer" if method == "full" else "adapter"
    else:
        from _train_fixtures import make_dataset, train_cfg

        from tunekit.train.run import run_train as train

        data = make_dataset(tmp_path / "prep")
        def cfg(out):
            return train_cfg(data, out, f"method={method}", "trainer.max_steps=2", "trainer.lr=1e-3")
        folder = "model" if method == "full" else "adapter"
    assert train(cfg(tmp_path / "plain")) == 0
    monkeypatch.setattr(TrainState, "fsdp", property(lambda self: True))
    assert train(cfg(tmp_path / "fsdp")) == 0
    assert (tmp_path / "fsdp" / "checkpoints" / "step-0000002" / "optimizer-rank0.pt").is_file()  # the FSDP layout
    files = sorted(p.relative_to(tmp_path / "plain" / folder)
                   for p in (tmp_path / "plain" / folder).rglob("*.safetensors"))
    assert files, folder
    for rel in files:
        a, b = load_file(str(tmp_path / "plain" / folder / rel)), load_file(str(tmp_path / "fsdp" / folder / rel))
        assert a.keys() == b.keys(), rel
        unequal = [k for k in a if not torch.equal(a[k], b[k])]
        assert not unequal, f"{rel}: {len(unequal)} of {len(a)} tensors differ, e.g. {unequal[:3]}"
