"""DDP: two CPU processes (gloo, launched by torchrun) with batch 2 each take the same steps as one process
with batch 4 — the loss is normalised by the token count of all ranks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _train_fixtures import make_dataset, torchrun, train_cfg
from safetensors.torch import load_file

from tunekit.train.run import run_train

pytestmark = [pytest.mark.integration, pytest.mark.slow]
COMMON = ("trainer.max_steps=3", "model.dropout=0", "method.dropout=0", "trainer.lr=1e-3", "trainer.save_every=2")


def test_two_processes_equal_one_process_with_the_whole_batch(tmp_path):
    data = make_dataset(tmp_path / "prep", codes="motif")
    ddp = tmp_path / "ddp"
    proc = torchrun(2, data, ddp, "trainer.batch_size=2", *COMMON)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "cpu:0 x 2" in proc.stdout  # really two ranks
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = tmp_path / "single"
        assert run_train(train_cfg(data, single, "trainer.batch_size=4", *COMMON)) == 0
    finally:
        torch.set_num_threads(threads)
    a = load_file(str(single / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(ddp / "adapter" / "adapter_model.safetensors"))
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-7, msg=k)
    losses = [[json.loads(x)["loss"] for x in (r / "metrics.jsonl").read_text().splitlines()] for r in (single, ddp)]
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-6)
    # every rank saved its RNG state for an exact resume
    names = {p.name for p in (ddp / "checkpoints" / "step-0000002").iterdir()}
    assert {"rng-rank0.safetensors", "rng-rank1.safetensors"} <= names
