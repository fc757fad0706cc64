"""`tunekit generate`: WAVs of the right length and rate from a trained run or a base model, seeds,
batching, windowed continuation and the cross-fade."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from _train_fixtures import generate_cfg, make_dataset, train_cfg

from tunekit.errors import ConfigError, ConfigErrors
from tunekit.generate import run_generate
from tunekit.models.musicgen import crossfade_join, generate_codes

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    from tunekit.train.run import run_train

    data = make_dataset(tmp_path_factory.mktemp("prep"), tracks=("train", "valid"))
    out = tmp_path_factory.mktemp("runs") / "lora"
    assert run_train(train_cfg(data, out, "trainer.max_steps=2", "trainer.lr=1e-2")) == 0
    return out


@pytest.mark.integration
def test_generate_from_a_run_writes_wavs_of_the_right_length_and_rate(run, tmp_path):
    out = tmp_path / "x.wav"
    assert run_generate(generate_cfg(f"run={run}", "prompt=[lofi piano, dark ambient pads]", "duration=0.5",
                                     f"out={out}", "seed=3")) == 0
    files = [tmp_path / "x_00.wav", tmp_path / "x_01.wav"]
    for f in files:
        audio, rate = sf.read(str(f), always_2d=True)
        assert rate == 32000 and audio.shape == (16000, 1)
        assert np.isfinite(audio).all() and np.abs(audio).max() > 0
    meta = json.loads((tmp_path / "x.json").read_text())
    assert [f["prompt"] for f in meta["files"]] == ["lofi piano", "dark ambient pads"]
    assert "LoRA adapter" in meta["source"] and meta["seed"] == 3


def test_the_run_adapter_is_applied_and_seeds_are_reproducible(run):
    from tunekit.models.musicgen import load_for_generation, load_musicgen

    model, processor, what = load_for_generation(run, device=torch.device("cpu"))
    base, _ = load_musicgen("facebook/musicgen-small", tiny=True)
    tuned = dict(model.named_parameters())
    changed = [n for n, p in base.named_parameters() if not torch.equal(p, tuned[n])]
    assert changed and all(n.startswith("decoder.model.decoder.layers.") for n in changed)  # LoRA merged in
    tok = processor.tokenizer
    a = generate_codes(model, tok, ["lofi piano", "pads"], 12, seed=3)
    b = generate_codes(model, tok, ["lofi piano", "pads"], 12, seed=3)
    c = generate_codes(model, tok, ["lofi piano", "pads"], 12, seed=4)
    assert a.shape == (2, 4, 12) and torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.integration
def test_long_durations_continue_window_by_window(tmp_path, monkeypatch):
    import tunekit.models.musicgen as musicgen

    calls = []
    real = musicgen.generate_codes

    def spy(*args, **kwargs):
        codes = real(*args, **kwargs)
        prompt = kwargs.get("prompt_codes")
        calls.append((args[3], None if prompt is None else prompt.shape[-1]))
        if prompt is not None:  # each chunk starts with the previous chunk's tail as its prompt
            assert torch.equal(codes[..., : prompt.shape[-1]].cpu(), prompt.cpu())
        return codes

    monkeypatch.setattr(musicgen, "generate_codes", spy)
    out = tmp_path / "long.wav"
    cfg = generate_cfg("models=tiny", "prompt=slow ambient drone", "duration=1.3", f"out={out}", "window_seconds=0.5",
                       "context_seconds=0.2", "crossfade_seconds=0.05", "batch_size=1")
    assert run_generate(cfg) == 0
    audio, rate = sf.read(str(out), always_2d=True)
    assert rate == 32000 and audio.shape[0] == round(1.3 * 32000)
    # 25-frame windows with 10 frames of context: 25 new, then 15, 15, 10 = 65 frames (1.3 s)
    assert calls == [(25, None), (15, 10), (15, 10), (10, 10)]


def test_generate_codes_continues_the_prompt_and_leaves_the_global_rng():
    from tunekit.models.musicgen import load_musicgen

    model, processor = load_musicgen("facebook/musicgen-stereo-small", tiny=True)
    prompt = torch.randint(0, 2048, (2, 8, 6))
    torch.manual_seed(0)
    expected_next = torch.rand(1)
    torch.manual_seed(0)
    codes = generate_codes(model, processor.tokenizer, ["a", "b"], 5, prompt_codes=prompt, guidance_scale=3.0, seed=1)
    assert torch.rand(1).item() == expected_next.item()
    assert codes.shape == (2, 8, 11)  # stereo: 8 interleaved codebooks, prompt + 5 new frames
    assert torch.equal(codes[..., :6], prompt)
    assert int(codes.max()) < 2048


def test_crossfade_join_is_seamless_for_matching_overlaps():
    signal = np.sin(np.arange(1000) / 7.0).astype(np.float32)[None]
    prev, nxt = signal[:, :600], signal[:, 500:]  # nxt re-renders the last 100 samples of prev
    joined = crossfade_join(prev, nxt, overlap=100, fade=40)
    assert joined.shape == (1, 1000)
    # x·(1 − w) + x·w without sums: four float32 roundings of |x| <= 1, at most 2·eps32 ≈ 2.4e-7.
    np.testing.assert_allclose(joined, signal, atol=1e-6)
    hard = crossfade_join(prev, nxt, overlap=100, fade=0)
    np.testing.assert_allclose(hard, signal, atol=1e-6)


def test_generate_config_problems_name_the_key(tmp_path):
    with pytest.raises(ConfigErrors, match="run/adapter"):
        generate_cfg("run=a", "adapter=b", "prompt=x")
    with pytest.raises(ConfigErrors, match="prompt: missing"):
        generate_cfg()
    with pytest.raises(ConfigErrors, match="duration"):
        generate_cfg("prompt=x", "duration=0")
    with pytest.raises(ConfigError, match="not a tunekit run folder") as err:
        run_generate(generate_cfg(f"run={tmp_path}", "prompt=x"))
    assert err.value.key == "run"


def test_model_is_a_family_or_a_checkpoint_on_the_command_line():
    """`model=` selects a family (a config group) or, for any other value, sets model.name: the shorthand
    users of `generate model=facebook/musicgen-small` and `train model=…` type."""
    from tunekit.cli.main import VERBS, _expand

    for verb in (VERBS["generate"], VERBS["train"]):
        assert _expand(verb, ["model=musicgen"]) == ["model=musicgen"]
        assert _expand(verb, ["model=facebook/musicgen-medium"]) == ["model.name=facebook/musicgen-medium"]
    with pytest.raises(ConfigError, match="htdemucs is a demucs model, not a generator") as err:
        _expand(VERBS["generate"], ["model=htdemucs"])
    assert err.value.key == "model"
    cfg = generate_cfg("prompt=x", *_expand(VERBS["generate"], ["model=facebook/musicgen-stereo-small"]))
    assert (cfg.model.family, cfg.model.name) == ("musicgen", "facebook/musicgen-stereo-small")


@pytest.mark.integration
def test_prompts_file_and_base_model(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("first prompt\n\nsecond prompt\nthird\n")
    out = tmp_path / "b.wav"
    assert run_generate(generate_cfg("models=tiny", f"prompts_file={prompts}", "duration=0.2", f"out={out}",
                                     "batch_size=2")) == 0
    names = sorted(p.name for p in tmp_path.glob("b_*.wav"))
    assert names == ["b_00.wav", "b_01.wav", "b_02.wav"]
    assert sf.info(str(tmp_path / "b_02.wav")).frames == round(0.2 * 32000)


def test_a_null_sampling_option_is_the_model_default(tmp_path):
    """guidance_scale=null (the generate and eval default) samples exactly as MusicGen's 3.0; options of another
    family (lyrics, steps, shift) are ignored by MusicGen, and an explicit value still counts."""
    from tunekit.models.musicgen import MusicgenSampler

    sampler = MusicgenSampler.load(model="facebook/musicgen-small", tiny=True)
    default, _ = sampler.generate(["a"], 0.2, seed=3, guidance_scale=None, lyrics="la", steps=8, shift=3.0)
    explicit, _ = sampler.generate(["a"], 0.2, seed=3, guidance_scale=3.0)
    other, _ = sampler.generate(["a"], 0.2, seed=3, guidance_scale=1.0)
    assert np.array_equal(default, explicit)
    assert not np.array_equal(default, other)


def test_lyrics_on_the_command_line_are_text(tmp_path):
    """Lyrics start with section tags (`[verse]`): on the command line they are text, not a Hydra list, quotes and
    all; lyrics_file= reads a .txt or .lrc file (timestamps dropped)."""
    from tunekit.cli.main import VERBS, _expand
    from tunekit.generate import _lyrics

    for text in ("[verse] la la [chorus] oh", "it's [chorus]", "plain"):
        assert generate_cfg("prompt=x", *_expand(VERBS["generate"], [f"lyrics={text}"])).lyrics == text
    lrc = tmp_path / "song.lrc"
    lrc.write_text("[00:01.00][verse] first line\n[00:04.50]second line\n", encoding="utf-8")
    assert _lyrics(generate_cfg("prompt=x", f"lyrics_file={lrc}")).splitlines() == ["[verse] first line",
                                                                                    "second line"]
    with pytest.raises(ConfigErrors, match="lyrics/lyrics_file"):
        generate_cfg("prompt=x", "lyrics=a", f"lyrics_file={lrc}")


def test_a_musicgen_run_plays_on_its_own_base(run, tmp_path):
    with pytest.raises(ConfigError, match="plays on the base it was trained on") as err:
        run_generate(generate_cfg(f"run={run}", "model.name=facebook/musicgen-medium", "prompt=x", "models=tiny",
                                  f"out={tmp_path}/x.wav"))
    assert err.value.key == "model.name"


def test_each_continuation_window_follows_the_melody_from_its_own_start(monkeypatch):
    """Past the first window, a melody model gets the chroma from where that window starts (as audiocraft offsets
    the melody per chunk), not the melody's first seconds again."""
    from types import SimpleNamespace

    import torch

    import tunekit.models.musicgen as mg

    chroma = torch.arange(600, dtype=torch.float32).reshape(1, 600, 1).repeat(1, 1, 12)  # frame i holds i
    seen: list[float] = []

    def fake_codes(model, tokenizer, prompts, n, *, seed, chroma=None, prompt_codes=None, **sampling):
        seen.append(float(chroma[0, 0, 0]))
        before = 0 if prompt_codes is None else prompt_codes.shape[-1]
        return torch.zeros((1, 4, before + n), dtype=torch.long)

    monkeypatch.setattr(mg, "generate_codes", fake_codes)
    monkeypatch.setattr(mg, "decode_codes", lambda codec, codes, channels: torch.zeros((1, 1, codes.shape[-1] * 640)))
    model = SimpleNamespace(config=SimpleNamespace(audio_encoder=SimpleNamespace(sampling_rate=32000, frame_rate=50)),
                            decoder=SimpleNamespace(config=SimpleNamespace(audio_channels=1)))
    audio, rate = mg.generate_audio(model, None, None, ["p"], 70.0, chroma=chroma)
    assert audio.shape[-1] == 70 * rate
    # windows of 30 s with 10 s of context: they start at 0, 20 and 40 s -> chroma frames 0, 156.25, 312.5
    assert seen == [0.0, 156.0, 312.0], seen
    assert mg.melody_from(chroma, 1e4)[0, 0, 0] == 599  # a melody shorter than the song keeps its last frame
