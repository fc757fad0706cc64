"""Training memory: the pre-flight estimate against what a decoder layer really saves for backward, no step's
autograd graph outliving its backward (which made the host heap grow from step 2 on), and per-step peak RSS."""

from __future__ import annotations

import json
import os
import weakref

import numpy as np
import pytest
import torch
from _train_fixtures import make_dataset, train_cfg

from tunekit.train import musicgen as trainer
from tunekit.train.lm import MusicgenLM
from tunekit.train.lora import apply_lora, unfreeze_decoder
from tunekit.train.loss import build_delayed, codebook_delays, masked_ce_sum
from tunekit.train.metrics import host_rss_gib, process_rss_peak_gib, reset_step_rss
from tunekit.train.preflight import ModelShape, estimate_memory, lora_dropout_inputs


def _saved_bytes(layers: int, method: str, dropout: float, mixed: bool) -> tuple[int, ModelShape]:
    """Bytes autograd saves for backward in one forward + loss of a MusicGen decoder 256 wide with `layers`
    layers (batch 2 x 100 frames), excluding the parameters themselves; and the model's shape."""
    from transformers import MusicgenConfig, MusicgenForConditionalGeneration

    from tunekit.models.registry import resolve

    config = MusicgenConfig.from_pretrained(resolve("facebook/musicgen-small", tiny=True))
    dec = config.decoder
    dec.num_hidden_layers, dec.hidden_size, dec.num_attention_heads, dec.ffn_dim = layers, 256, 4, 1024
    torch.manual_seed(0)
    model = MusicgenForConditionalGeneration(config).train()
    if method == "lora":
        apply_lora(model, 8, 8.0, dropout, "attention_ffn")
    else:
        unfreeze_decoder(model)
    lm = MusicgenLM(model).train()
    codes = torch.randint(0, 2048, (2, 4, 100))
    batch = build_delayed(codes, torch.full((2,), 100), codebook_delays(4), 2048, 2048)
    states = torch.randn(2, 8, config.text_encoder.hidden_size)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=mixed)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast:
        masked_ce_sum(lm(batch.inputs, states, torch.ones(2, 8, dtype=torch.long)), batch.targets, batch.mask)
    return sum(saved.values()), trainer.model_shape(model, 8)


@pytest.mark.parametrize(("method", "dropout", "mixed"), [
    ("full", 0.0, False), ("lora", 0.05, False), ("lora", 0.05, True),
])
def test_estimate_matches_what_each_decoder_layer_saves_for_backward(method, dropout, mixed):
    # The per-layer slope (3 layers minus 1) isolates the decoder layers from the embeddings and heads.
    # LoRA dropout keeps a private copy of every wrapped input, and autocast keeps half-precision weight
    # copies and fp32 norms: an estimate without them is 30-50 % low on these rows.
    (one, shape1), (three, shape3) = (_saved_bytes(n, method, dropout, mixed) for n in (1, 3))

    def estimate(shape: ModelShape) -> float:
        mem = estimate_memory(
            shape, params_on_device=0, trainable=0, batch=2, seq=100 + shape.max_delay, text_len=8, mixed=mixed,
            checkpointing=False, ema=False, ffn_trained=True,
            lora_inputs=lora_dropout_inputs(shape, "attention_ffn") if dropout > 0 else 0, overhead_gib=0.0,
        )
        return (mem["weights_gib"] + mem["activations_gib"]) * 2**30  # weights: only autocast's copies here

    measured = (three - one) / 2
    predicted = (estimate(shape3) - estimate(shape1)) / 2
    assert abs(predicted / measured - 1) < 0.10, (
        f"estimate {predicted / 2**20:.2f} MiB per layer vs {measured / 2**20:.2f} MiB saved "
        f"({100 * (predicted / measured - 1):+.1f} %)"
    )


@pytest.mark.integration
@pytest.mark.usefixtures("one_torch_thread")
def test_no_step_keeps_its_autograd_graph_into_the_next_forward(tmp_path, monkeypatch):
    # A loss tensor kept after its backward holds the whole graph: thousands of small nodes allocated among
    # the activations, which pin the freed activation memory so glibc's heap grows by about one step's
    # activations (musicgen-small shape: 9.0 -> 12.6 GiB RSS from step 2 on). Each loss must be gone by the
    # time the next micro-batch's forward pass has produced its logits.
    losses: list[weakref.ref] = []
    alive: list[int] = []

    def recording_ce_sum(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        alive.append(sum(ref() is not None for ref in losses))
        out = masked_ce_sum(logits, targets, mask)
        losses.append(weakref.ref(out))
        return out

    monkeypatch.setattr(trainer, "masked_ce_sum", recording_ce_sum)
    run = tmp_path / "run"
    trainer.train_musicgen(train_cfg(make_dataset(tmp_path / "prep"), run, "trainer.max_steps=3",
                                     "trainer.grad_accum=2"))
    assert len(alive) == 6 and alive == [0] * 6, f"losses still alive at each later forward: {alive}"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "step_s" in r]
    assert len(steps) == 3
    for r in steps:  # per-step peak RSS and CPU time are recorded (bench/bench_train.py reads them)
        assert 0 < r["rss_peak_gib"] <= process_rss_peak_gib() + 8 / 1024 and 0 < r["cpu_s"], r


@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux /proc/self/clear_refs")
def test_step_rss_peak_is_the_steps_own_and_the_process_peak_survives():
    block = np.ones(2**25)  # 256 MiB, touched; large enough that freeing it returns it to the system
    peak = host_rss_gib()[1]
    del block
    reset_step_rss()
    now, step_peak = host_rss_gib()
    # The kernel's RSS counters are approximate to a few hundred KiB (per-CPU batches): compare with 8 MiB slack.
    slack = 8 / 1024
    assert step_peak < peak - 0.2, f"peak after reset {step_peak:.3f} GiB, before {peak:.3f} GiB"
    assert step_peak >= now - slack
    assert process_rss_peak_gib() >= peak - slack, f"process peak {process_rss_peak_gib():.3f} < {peak:.3f} GiB"
