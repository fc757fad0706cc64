"""Training math against transformers' own MusicGen: the delay-pattern loss equals `forward(labels=…)`,
padding and delay positions are masked, and condition dropout produces exactly generate()'s
unconditional branch."""

from __future__ import annotations

import pytest
import torch
from _numerics import assert_close, assert_close_in_norm, reorder_rtol
from _train_fixtures import musicgen_sums

from tunekit.train.lm import MusicgenLM, drop_conditions, encode_text
from tunekit.train.loss import build_delayed, codebook_delays, loss_scale, masked_ce_sum, undelay

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CAPTIONS = ["lofi piano with soft drums", "dark ambient drone with warm pads and bells", "jazz"]


@pytest.fixture(scope="module")
def mono():
    from tunekit.models.musicgen import load_musicgen

    return load_musicgen("facebook/musicgen-small", tiny=True)


def _batch(k: int, lengths: list[int], seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 2048, (len(lengths), k, max(lengths)), generator=g)
    return codes, torch.tensor(lengths)


def _our_loss(model, tokenizer, codes, n, chroma=None):
    dec = model.decoder.config
    db = build_delayed(codes, n, codebook_delays(dec.num_codebooks, dec.audio_channels), 2048, 2048)
    states, mask = encode_text(model.text_encoder, tokenizer, CAPTIONS[: len(codes)], "cpu")
    with torch.no_grad():
        logits = MusicgenLM(model)(db.inputs, states, mask, chroma)
    return masked_ce_sum(logits, db.targets, db.mask) / db.n_tokens, db, states, mask


@pytest.mark.parametrize("name", ["facebook/musicgen-small", "facebook/musicgen-stereo-small"])
def test_loss_equals_transformers_labels_loss(name):
    from tunekit.models.musicgen import load_musicgen

    model, processor = load_musicgen(name, tiny=True)
    k = model.decoder.config.num_codebooks
    codes, n = _batch(k, [40, 23, 9])  # two windows shorter than the batch: padded and masked
    ours, db, states, mask = _our_loss(model, processor.tokenizer, codes, n)
    with torch.no_grad():
        ref = model(encoder_outputs=(states,), attention_mask=mask, labels=db.hf_labels()).loss
    assert_close(ours, ref, atol=_reduction_atol(model, db.n_tokens, ref.item()), what=name)


def test_melody_loss_equals_transformers_labels_loss():
    from transformers import AutoTokenizer, MusicgenMelodyForConditionalGeneration

    from tunekit.models.registry import resolve

    path = resolve("facebook/musicgen-melody", tiny=True)
    model = MusicgenMelodyForConditionalGeneration.from_pretrained(path).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    codes, n = _batch(4, [30, 17, 30], seed=1)
    chroma = torch.zeros(3, 12, 12)
    chroma[..., 4] = 1
    ours, db, _, _ = _our_loss(model, tokenizer, codes, n, chroma)
    enc = tokenizer(CAPTIONS, padding=True, return_tensors="pt")
    with torch.no_grad():
        ref = model(**enc, input_features=chroma, labels=db.hf_labels()).loss
    assert_close(ours, ref, atol=_reduction_atol(model, db.n_tokens, ref.item()), what="melody")


def _reduction_atol(model, n_tokens: int, loss: float) -> float:
    """Both losses come from the same logits, reduced differently: ours sums every token's cross-entropy and
    divides once, transformers averages per codebook, then over codebooks. Two orders of that sum of N
    positive terms differ by at most reorder_rtol(N)·N·mean = reorder_rtol(N)·loss; each token's log-softmax,
    a sum over the vocabulary, by reorder_rtol(V) in absolute terms (log of a relative error)."""
    return reorder_rtol(model.decoder.config.vocab_size) + reorder_rtol(n_tokens) * abs(loss)


def test_delay_pattern_layout_and_mask():
    codes, n = _batch(4, [6, 3])
    db = build_delayed(codes, n, [0, 1, 2, 3], pad_id=2048, start_id=2049)
    assert db.targets.shape == (2, 4, 6 + 3)
    for b, length in enumerate(n.tolist()):
        for k in range(4):
            for s in range(9):
                frame = s - k
                valid = 0 <= frame < length
                assert bool(db.mask[b, k, s]) == valid
                assert db.targets[b, k, s] == (codes[b, k, frame] if valid else 2048)
    # inputs: start token, then the targets shifted right (as transformers' shift_tokens_right)
    assert (db.inputs[..., 0] == 2049).all()
    assert torch.equal(db.inputs[..., 1:], db.targets[..., :-1])
    assert db.n_tokens == 4 * int(n.sum())  # every codebook predicts each valid frame once
    torch.testing.assert_close(undelay(db.targets, [0, 1, 2, 3], 6)[0], codes[0])
    stereo = build_delayed(codes.repeat(1, 2, 1), n, codebook_delays(8, 2), 2048, 2048)
    assert stereo.targets.shape[-1] == 6 + 3 and stereo.n_tokens == 8 * int(n.sum())


def test_padding_is_masked_not_trained_as_silence(mono):
    model, processor = mono
    codes, n = _batch(4, [40, 12])
    base, *_ = _our_loss(model, processor.tokenizer, codes, n)
    changed = codes.clone()
    changed[1, :, 12:] = 0  # what "silence" padding would look like; must not matter
    again, *_ = _our_loss(model, processor.tokenizer, changed, n)
    # Bitwise equal by construction: padded positions reach the valid ones only through exact zeros (causal
    # softmax weights exp(-inf)) and their targets are ignored, in the same kernels on the same shapes.
    assert again.item() == pytest.approx(base.item(), abs=1e-6)
    # a short window's loss does not depend on what it is batched with (right padding + causal attention)
    db = build_delayed(codes, n, [0, 1, 2, 3], 2048, 2048)
    states, mask = encode_text(model.text_encoder, processor.tokenizer, CAPTIONS[:2], "cpu")
    with torch.no_grad():
        logits = MusicgenLM(model)(db.inputs, states, mask)
    second = masked_ce_sum(logits[1:], db.targets[1:], db.mask[1:]) / db.mask[1:].sum()
    states1, mask1 = encode_text(model.text_encoder, processor.tokenizer, CAPTIONS[1:2], "cpu")
    db1 = build_delayed(codes[1:, :, :12], n[1:], [0, 1, 2, 3], 2048, 2048)
    with torch.no_grad():
        alone = masked_ce_sum(MusicgenLM(model)(db1.inputs, states1, mask1), db1.targets, db1.mask) / db1.n_tokens
    # Other batch and text shapes: the same sums, in other orders (kernels, padding). The loss is a mean of
    # positive terms, so the forward chain's relative bound applies to it (logits |z| < loss here).
    sums = musicgen_sums("facebook/musicgen-small", windows=2, frames=40, text_tokens=mask.shape[1],
                         tokens=db1.n_tokens)
    assert_close(second, alone, atol=reorder_rtol(*sums["forward"], *sums["loss"]) * alone.item(),
                 what="a short window alone vs in a batch")


def test_dropped_samples_get_exactly_generates_unconditional_inputs(mono):
    from transformers import GenerationConfig

    model, processor = mono
    enc = processor.tokenizer(CAPTIONS, padding=True, return_tensors="pt")
    states, mask = encode_text(model.text_encoder, processor.tokenizer, CAPTIONS, "cpu")
    drop = torch.tensor([False, True, True])
    d_states, d_mask, _ = drop_conditions(states, mask, drop)
    # what MusicgenForConditionalGeneration.generate builds for classifier-free guidance
    kwargs = model._prepare_text_encoder_kwargs_for_generation(
        enc["input_ids"], {"attention_mask": enc["attention_mask"]}, "input_ids",
        GenerationConfig(guidance_scale=3.0),
    )
    null_states = kwargs["encoder_outputs"].last_hidden_state[3:]
    null_mask = kwargs["attention_mask"][3:]
    torch.testing.assert_close(d_states[1:], null_states[1:], rtol=0, atol=0)
    assert torch.equal(d_mask[1:], null_mask[1:])
    torch.testing.assert_close(d_states[0], states[0], rtol=0, atol=0)  # kept samples are untouched
    assert torch.equal(d_mask[0], mask[0])
    # and the decoder sees the same thing through our module as through the full model
    codes, n = _batch(4, [20, 20, 20])
    db = build_delayed(codes, n, [0, 1, 2, 3], 2048, 2048)
    with torch.no_grad():
        ours = MusicgenLM(model)(db.inputs, d_states, d_mask)
        ref = model(
            encoder_outputs=(kwargs["encoder_outputs"].last_hidden_state[3:],), attention_mask=null_mask,
            decoder_input_ids=db.inputs.reshape(-1, db.inputs.shape[-1]),
        ).logits.reshape(3, 4, -1, 2048)
    # The same decoder code on the same inputs and shapes: bitwise equal; 1e-5 is only slack.
    torch.testing.assert_close(ours[1:], ref[1:], rtol=1e-5, atol=1e-5)


def test_melody_dropout_uses_the_null_chroma():
    states = torch.randn(2, 5, 8)
    mask = torch.ones(2, 5, dtype=torch.long)
    chroma = torch.zeros(2, 7, 12)
    chroma[..., 5] = 1
    s, m, c = drop_conditions(states, mask, torch.tensor([False, False]), chroma, torch.tensor([False, True]))
    assert torch.equal(c[0], chroma[0]) and torch.equal(s, states) and torch.equal(m, mask)
    assert (c[1, :, 0] == 1).all() and c[1, :, 1:].sum() == 0


def test_accumulation_scale_gives_the_large_batch_gradient(mono):
    """Summed micro-batch losses scaled by world/N_total reproduce the gradient of one big batch."""
    model, processor = mono
    lm = MusicgenLM(model)
    codes, n = _batch(4, [30, 11, 25, 30])
    states, mask = encode_text(model.text_encoder, processor.tokenizer, CAPTIONS + ["x"], "cpu")
    names, params = zip(*[(name, p) for name, p in lm.named_parameters() if p.requires_grad])

    def grads(splits: list[slice]) -> list[torch.Tensor]:
        lm.zero_grad(set_to_none=True)
        total = 4 * int(n.sum())
        for sl in splits:
            db = build_delayed(codes[sl], n[sl], [0, 1, 2, 3], 2048, 2048)
            s = masked_ce_sum(lm(db.inputs, states[sl], mask[sl]), db.targets, db.mask)
            (s * loss_scale(total)).backward()
        return [p.grad.clone() for p in params]

    lm.eval()  # dropout off: the comparison is about the arithmetic
    big = grads([slice(0, 4)])
    # The same gradient summed in other orders (micro-batches, kernels): per tensor, within the float32 bound of
    # the sums on its path, in norm (an element can cancel to rounding level).
    sums = musicgen_sums("facebook/musicgen-small", windows=4, frames=int(n.max()), text_tokens=mask.shape[1],
                         tokens=4 * int(n.sum()))
    rtol = reorder_rtol(*sums["forward"], *sums["loss"], *sums["backward"])
    for splits in ([slice(0, 2), slice(2, 4)], [slice(i, i + 1) for i in range(4)]):
        assert_close_in_norm(dict(zip(names, grads(splits))), dict(zip(names, big)), rtol=rtol,
                             what=f"{len(splits)} micro-batches")
    # ... and the bound still sees a wrong normalisation: each micro-batch averaged over its own tokens.
    lm.zero_grad(set_to_none=True)
    for sl in (slice(0, 2), slice(2, 4)):
        db = build_delayed(codes[sl], n[sl], [0, 1, 2, 3], 2048, 2048)
        (masked_ce_sum(lm(db.inputs, states[sl], mask[sl]), db.targets, db.mask) / (2 * db.n_tokens)).backward()
    with pytest.raises(AssertionError, match="differ by more than"):
        assert_close_in_norm(dict(zip(names, [p.grad for p in params])), dict(zip(names, big)), rtol=10 * rtol)
    model.zero_grad(set_to_none=True)
