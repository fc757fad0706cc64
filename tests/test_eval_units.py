"""Evaluation building blocks: audio sets and prompt pairing, CLAP score, front ends and resampling,
VGGish weights, the statistics cache, PNG encoding and the config checks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tunekit.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RATE = 44100


@pytest.fixture(scope="module")
def tiny_clap_embedder():
    """The tiny CLAP (same classes and 48 kHz / 10 s front end as larger_clap_music) as an embedder."""
    from tunekit.models.clap import load_clap
    from tunekit.models.embedders import ClapEmbedder

    model, processor = load_clap("laion/larger_clap_music", tiny=True)
    return ClapEmbedder(model, processor, "laion/larger_clap_music", "tiny")


def _tone(freq: float, seconds: float, rate: int = RATE, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    x = (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


# ----------------------------------------------------------------------------- sets and prompts


def test_folder_ids_are_relative_paths_without_extension(tmp_path):
    from tunekit.eval.sets import folder_set

    (tmp_path / "rock").mkdir()
    sf.write(tmp_path / "a.wav", _tone(440, 0.2), RATE)
    sf.write(tmp_path / "rock" / "b.flac", _tone(440, 0.2), RATE)
    (tmp_path / "notes.txt").write_text("not audio")
    s = folder_set(tmp_path, name="generated", key="generated")
    assert s.ids() == ["a", "rock/b"]
    sf.write(tmp_path / "a.flac", _tone(440, 0.2), RATE)
    with pytest.raises(ConfigError, match="share the id 'a'"):
        folder_set(tmp_path, name="generated", key="generated")


def test_prompt_files_csv_jsonl_json(tmp_path):
    from tunekit.eval.sets import load_prompts

    (tmp_path / "p.csv").write_text('file,caption\nrock/b.wav,"loud, fast rock"\n./a.flac,calm piano\n')
    assert load_prompts(tmp_path / "p.csv") == {"rock/b": "loud, fast rock", "a": "calm piano"}
    (tmp_path / "p.jsonl").write_text('{"id": "a", "prompt": "calm piano"}\n\n{"id": "rock/b", "text": "rock"}\n')
    assert load_prompts(tmp_path / "p.jsonl") == {"a": "calm piano", "rock/b": "rock"}
    (tmp_path / "p.json").write_text(json.dumps({"a.wav": "x"}))
    assert load_prompts(tmp_path / "p.json") == {"a": "x"}
    (tmp_path / "bad.csv").write_text("name_of_file,words\na,b\n")
    with pytest.raises(ConfigError, match="id column"):
        load_prompts(tmp_path / "bad.csv")


def test_prep_windows_are_read_at_their_offsets(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tunekit.eval.sets import load_set

    audio = np.random.default_rng(0).standard_normal((RATE * 3, 2)).astype(np.float32) * 0.1
    (tmp_path / "audio").mkdir()
    sf.write(tmp_path / "audio" / "t.wav", audio, RATE, subtype="FLOAT")
    rows = [
        {"window_id": "t-1", "track_id": "t", "audio_path": "audio/t.wav", "offset_s": 1.0, "duration_s": 1.5,
         "split": "test", "caption": "second window"},
        {"window_id": "t-0", "track_id": "t", "audio_path": "audio/t.wav", "offset_s": 0.0, "duration_s": 1.0,
         "split": "train", "caption": "first window"},
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "windows.parquet")
    s = load_set(tmp_path, name="reference", key="reference", splits=["test"])
    assert s.kind == "prep" and s.ids() == ["t-1"] and s.prompts() == {"t-1": "second window"}
    got, rate = s.items[0].load()
    assert rate == RATE and got.shape == (2, int(1.5 * RATE))
    np.testing.assert_allclose(got.T, audio[RATE : RATE + int(1.5 * RATE)], atol=1e-6)
    with pytest.raises(ConfigError, match="reference_splits"):
        load_set(tmp_path, name="reference", key="reference", splits=["valid"])


def test_content_hash_follows_the_audio(tmp_path):
    from tunekit.eval.sets import folder_set

    sf.write(tmp_path / "a.wav", _tone(440, 0.2), RATE)
    h1 = folder_set(tmp_path, name="r", key="reference").content_hash()
    assert folder_set(tmp_path, name="r", key="reference").content_hash() == h1
    sf.write(tmp_path / "a.wav", _tone(880, 0.2), RATE)
    assert folder_set(tmp_path, name="r", key="reference").content_hash() != h1


# ----------------------------------------------------------------------------- CLAP score pairing


def test_clap_score_pairs_by_id_not_by_order():
    from tunekit.eval.clap_score import clap_score

    basis = np.eye(4)
    audio = {"c": basis[2], "a": basis[0], "b": basis[1]}
    text = {"b": basis[1], "a": basis[0], "c": basis[2], "z": basis[3]}
    score = clap_score(audio, text)
    assert score.mean == pytest.approx(1.0) and score.n == 3
    assert clap_score(audio, {"a": basis[1], "b": basis[0], "c": basis[3]}).mean == pytest.approx(0.0)


class _ToneClap:
    """A stand-in CLAP for pairing tests: a clip 'embeds' to a one-hot of its tone, a prompt to a one-hot
    of the frequency it names, so the score is 1 exactly when every clip meets its own prompt."""

    name = "clap"
    dim = 4
    FREQS = (220.0, 330.0, 440.0, 660.0)

    def windows(self, audio: np.ndarray, rate: int) -> list[np.ndarray]:
        from tunekit.audio.channels import to_mono

        return [np.array([rate, *to_mono(audio)[:rate]], dtype=np.float64)]

    def embed_windows(self, windows: list[np.ndarray]) -> np.ndarray:
        out = []
        for w in windows:
            rate, x = int(w[0]), w[1:]
            peak = np.argmax(np.abs(np.fft.rfft(x))) * rate / len(x)
            out.append(np.eye(4)[int(np.argmin([abs(peak - f) for f in self.FREQS]))])
        return np.array(out)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        return np.array([np.eye(4)[self.FREQS.index(float(t.split()[-2]))] for t in texts])


def _tone_folder(tmp_path: Path) -> tuple[Path, Path]:
    folder = tmp_path / "gen"
    folder.mkdir()
    lines = ["id,prompt"]
    for i, f in enumerate(_ToneClap.FREQS):
        sf.write(folder / f"clip{i}.wav", _tone(f, 1.0), RATE)
        lines.append(f"clip{i},a tone at {f:g} hz")
    prompts = tmp_path / "prompts.csv"
    prompts.write_text("\n".join(lines) + "\n")
    return folder, prompts


@pytest.mark.parametrize("listing", ["sorted", "shuffled", "reversed"])
def test_clap_score_of_a_folder_stays_paired_under_any_directory_order(tmp_path, monkeypatch, listing):
    from tunekit.eval import sets
    from tunekit.eval.score import FadSettings, score_set

    folder, prompts = _tone_folder(tmp_path)
    real_rglob = Path.rglob

    def scrambled(self: Path, pattern: str):
        found = list(real_rglob(self, pattern))
        if listing == "shuffled":
            np.random.default_rng(7).shuffle(found)
        elif listing == "reversed":
            found.reverse()
        return iter(found)

    monkeypatch.setattr(sets.Path, "rglob", scrambled)
    generated, missing = sets.attach_prompts(sets.folder_set(folder, name="generated", key="generated"),
                                             sets.load_prompts(prompts))
    assert missing == []
    tone = _ToneClap()
    result = score_set("generated", generated, [tone], [], {}, batch_size=3, fad_settings=FadSettings(enabled=False),
                       n_outliers=0, clap_embedder=tone)
    assert result.metrics["clap_score"] == pytest.approx(1.0)
    assert result.metrics["clap_score_n"] == 4


def test_the_pairing_test_can_fail(tmp_path):
    from tunekit.eval import sets
    from tunekit.eval.score import FadSettings, score_set

    folder, _ = _tone_folder(tmp_path)
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("id,prompt\n" + "\n".join(f"clip{i},a tone at {f:g} hz" for i, f in
                                             zip([1, 2, 3, 0], _ToneClap.FREQS, strict=True)) + "\n")
    generated, _ = sets.attach_prompts(sets.folder_set(folder, name="g", key="generated"), sets.load_prompts(wrong))
    tone = _ToneClap()
    result = score_set("g", generated, [tone], [], {}, batch_size=2, fad_settings=FadSettings(enabled=False),
                       n_outliers=0, clap_embedder=tone)
    assert result.metrics["clap_score"] == pytest.approx(0.0)


# ----------------------------------------------------------------------------- front ends and resampling


@pytest.mark.parametrize("freq", [500.0, 1000.0, 3000.0])
def test_vggish_front_end_sees_a_tone_at_its_frequency(freq):
    from tunekit.models import vggish

    examples = vggish.waveform_to_examples(_tone(freq, 3.0, channels=2).T, RATE)
    assert examples.shape == (3, 1, 96, 64)  # 3 s of 44.1 kHz → 16 kHz → three 0.96 s patches
    band = int(examples[:, 0].mean(axis=(0, 1)).argmax())
    edges = np.linspace(vggish.hertz_to_mel(vggish.MEL_MIN_HZ), vggish.hertz_to_mel(vggish.MEL_MAX_HZ), 66)
    assert band == int(np.abs(edges[1:-1] - vggish.hertz_to_mel(freq)).argmin())


def test_vggish_mel_matrix_against_its_definition():
    from tunekit.models.vggish import hertz_to_mel, mel_matrix

    m = mel_matrix()
    assert m.shape == (257, 64) and (m[0] == 0).all()
    # A bin exactly at a band centre has weight 1 in that band.
    hz = np.linspace(0, 8000, 257)
    centres = np.linspace(hertz_to_mel(125), hertz_to_mel(7500), 66)[1:-1]
    k = 40
    b = int(np.abs(hertz_to_mel(hz) - centres[k]).argmin())
    expected = 1 - abs(hertz_to_mel(hz[b]) - centres[k]) / (centres[k + 1] - centres[k])
    assert m[b, k] == pytest.approx(expected, abs=1e-9)
    assert math.isclose(float(hertz_to_mel(700.0)), 1127.0 * math.log(2.0))


def test_clap_front_end_gets_48_khz_and_sees_1_khz(tiny_clap_embedder):
    e = tiny_clap_embedder
    windows = e.windows(_tone(1000.0, 4.0, channels=2).T, RATE)
    assert len(windows) == 1 and len(windows[0]) == 4 * 48000
    spectrum = np.abs(np.fft.rfft(windows[0]))
    assert abs(np.argmax(spectrum) * 48000 / len(windows[0]) - 1000.0) < 1.0
    fe = e.processor.feature_extractor
    feats = fe([windows[0].astype(np.float64)], sampling_rate=48000, return_tensors="np")["input_features"][0, 0]
    # The loudest mel band is the one centred nearest 1 kHz (centres computed independently by librosa;
    # CLAP uses the Slaney scale, or HTK for "fusion" checkpoints).
    import librosa

    centres = librosa.mel_frequencies(fe.feature_size + 2, fmin=fe.frequency_min, fmax=fe.frequency_max,
                                      htk=fe.truncation == "fusion")[1:-1]
    assert int(feats[:400].mean(axis=0).argmax()) == int(np.abs(centres - 1000.0).argmin())


def test_clap_windows_policy(tiny_clap_embedder):
    e = tiny_clap_embedder
    sizes = [len(w) for w in e.windows(np.zeros(int(48000 * 24.0), dtype=np.float32), 48000)]
    assert sizes == [480000, 480000]  # the 4 s remainder is under half a window: dropped
    sizes = [len(w) for w in e.windows(np.zeros(int(48000 * 26.0), dtype=np.float32), 48000)]
    assert sizes == [480000, 480000, 288000]
    emb = e.embed_windows(e.windows(_tone(440.0, 2.0).reshape(1, -1), RATE))
    assert emb.shape == (1, e.dim)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    again = e.embed_windows(e.windows(_tone(440.0, 2.0).reshape(1, -1), RATE))
    np.testing.assert_array_equal(emb, again)  # no random fusion crop


def test_encodec_frames_are_50_per_second_at_32_khz():
    from tunekit.eval.embeddings import EncodecEmbedder, embed_items
    from tunekit.models.encodec import load_encodec

    model, _ = load_encodec("facebook/encodec_32khz", tiny=True)
    e = EncodecEmbedder(model, "facebook/encodec_32khz", "fp")
    out = embed_items([e], [("a", _tone(440, 1.5).reshape(1, -1), RATE), ("b", _tone(440, 0.5).reshape(1, -1), RATE)],
                      batch_size=8)
    assert out["encodec"]["a"].shape == (75, e.dim) and out["encodec"]["b"].shape == (25, e.dim)


# ----------------------------------------------------------------------------- VGGish weights


def test_vggish_real_architecture_shapes():
    import torch

    from tunekit.models.vggish import build_vggish

    model = build_vggish()
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 72_141_184
    keys = [k for k in model.state_dict() if k.startswith(("features.", "embeddings."))]
    assert keys == [f"features.{i}.{w}" for i in (0, 3, 6, 8, 11, 13) for w in ("weight", "bias")] + [
        f"embeddings.{i}.{w}" for i in (0, 2, 4) for w in ("weight", "bias")]
    with torch.no_grad():
        assert model.embed(torch.zeros(2, 1, 96, 64)).shape == (2, 128)


def test_tiny_vggish_loads_through_the_torchvggish_layout():
    import torch

    from tunekit.models.vggish import PCA_FILE, WEIGHTS_FILE, load_vggish

    model = load_vggish("torchvggish", tiny=True)
    folder = Path(model.source)
    assert (folder / WEIGHTS_FILE).is_file() and (folder / PCA_FILE).is_file()
    again = load_vggish(str(folder))  # the same folder as a local path, not tiny
    assert again.fingerprint == model.fingerprint
    x = torch.randn(3, 1, 96, 64)
    with torch.no_grad():
        np.testing.assert_array_equal(model.embed(x).numpy(), again.embed(x).numpy())
        post = model(x, postprocess=True)
    assert post.min() >= 0 and post.max() <= 255 and torch.equal(post, post.round())


def test_vggish_reads_numpy_pickled_pca_params_and_safetensors(tmp_path):
    import torch
    from safetensors.torch import save_file

    from tunekit.models.vggish import PCA_FILE, WEIGHTS_FILE, load_vggish

    tiny = Path(load_vggish(tiny=True).source)
    folder = tmp_path / "vggish"
    folder.mkdir()
    (folder / WEIGHTS_FILE).write_bytes((tiny / WEIGHTS_FILE).read_bytes())
    rng = np.random.default_rng(0)
    vectors, means = rng.standard_normal((128, 128)), rng.standard_normal(128)
    # The released PCA file holds numpy arrays; torch.load(weights_only=True) must read them.
    torch.save({"pca_eigen_vectors": vectors, "pca_means": means}, folder / PCA_FILE)
    model = load_vggish(str(folder))
    np.testing.assert_allclose(model.pca_eigen_vectors.numpy(), vectors, rtol=1e-6)
    np.testing.assert_allclose(model.pca_means.numpy()[:, 0], means, rtol=1e-6)
    single = tmp_path / "vggish.safetensors"
    tensors = torch.load(folder / WEIGHTS_FILE, weights_only=True)
    save_file({**tensors, "pca_eigen_vectors": torch.from_numpy(vectors).float(),
               "pca_means": torch.from_numpy(means).float()}, str(single))
    from_st = load_vggish(str(single))
    np.testing.assert_allclose(from_st.pca_eigen_vectors.numpy(), vectors, rtol=1e-6)
    bad = tmp_path / "bad.safetensors"
    save_file({"x": torch.zeros(2)}, str(bad))
    with pytest.raises(ConfigError, match="not a VGGish checkpoint"):
        load_vggish(str(bad))


def test_vggish_offline_without_weights_says_where_to_put_them(tmp_path, monkeypatch):
    from tunekit.errors import StageUnavailableError
    from tunekit.models.vggish import load_vggish

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(StageUnavailableError, match="vggish-10086976.pth"):
        load_vggish("torchvggish", cache_dir=tmp_path)


# ----------------------------------------------------------------------------- cache, images, config


def test_stats_cache_round_trip_without_pickle(tmp_path):
    from tunekit.eval import stats_cache

    rng = np.random.default_rng(0)
    frames = {"b": rng.standard_normal((5, 3)), "a": rng.standard_normal((4, 3)), "empty": np.zeros((0, 3))}
    s = stats_cache.from_frames(frames, keep_frames=True)
    path = stats_cache.cache_path(tmp_path, "vggish", "k" * 64, "h" * 64)
    stats_cache.save(path, s)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary files left
    with np.load(path, allow_pickle=False) as z:
        assert set(z.files) >= {"mu", "sigma", "n", "item_ids", "item_means", "item_frames", "frames"}
    back = stats_cache.load(path)
    assert back.item_ids == ["a", "b", "empty"] and back.n == 9
    np.testing.assert_array_equal(back.sigma, s.sigma)
    assert set(back.clip_vectors()) == {"a", "b"}
    assert stats_cache.cache_path(tmp_path, "vggish", "k" * 64, "x" * 64) != path


def test_png_round_trip_and_colormap():
    from tunekit.eval.images import colormap, decode_png, encode_png, spectrogram_png

    rgb = np.random.default_rng(0).integers(0, 256, size=(7, 5, 3), dtype=np.uint8)
    np.testing.assert_array_equal(decode_png(encode_png(rgb)), rgb)
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    np.testing.assert_array_equal(decode_png(encode_png(grey)), grey)
    assert tuple(colormap(np.array([0.0]))[0]) == (0, 0, 4) and tuple(colormap(np.array([1.0]))[0]) == (252, 253, 191)
    img = decode_png(spectrogram_png(_tone(1000, 1.0), RATE, width=100, height=64))
    assert img.shape == (64, 100, 3)
    brightest_row = int(img.astype(int).sum(axis=(1, 2)).argmax())
    assert 0 < brightest_row < 63  # the tone is a line inside the picture, not at an edge


def test_config_requires_exactly_one_mode():
    from tunekit.config.compose import load_config
    from tunekit.errors import ConfigErrors
    from tunekit.eval.config import EvalConfig

    with pytest.raises(ConfigErrors, match="run=<run dir>, or generated="):
        load_config("eval", [], EvalConfig)
    with pytest.raises(ConfigErrors, match=r"not both \(keys: run, generated\)"):
        load_config("eval", ["run=r", "generated=g", "reference=x"], EvalConfig)
    with pytest.raises(ConfigErrors, match="needs reference="):
        load_config("eval", ["generated=g", "out=o"], EvalConfig)
    with pytest.raises(ConfigErrors, match="unknown embeddings"):
        load_config("eval", ["run=r", "embeddings=[clap,mfcc]"], EvalConfig)
    cfg = load_config("eval", ["generated=g", "reference=r", "out=o", "logger=none", "models=tiny"], EvalConfig)
    assert cfg.models.tiny is True and cfg.logger._target_.endswith("NoLogger")


def test_every_embedding_choice_has_a_builder():
    """The names `embeddings=` accepts (checked before work) are exactly the builders eval has."""
    from tunekit.eval.config import EMBEDDING_NAMES, EvalConfig
    from tunekit.eval.embeddings import EMBEDDERS

    assert list(EMBEDDERS) == list(EMBEDDING_NAMES)
    assert all(hasattr(EvalConfig, key) for _, key in EMBEDDERS.values())


def test_wandb_metrics_carry_kad_and_the_paired_deltas():
    from tunekit.eval.wandb_log import flat_metrics

    metrics = {
        "base": {"clap": {"fad": 2.0, "n": 40, "kad": 1.5}},
        "finetuned": {"clap": {"fad": 1.0, "n": 40, "kad": 0.5}},
        "reference": {"clap": {"reconstruction": {"fad": 0.1, "kad": 0.05}}},
        "delta": {"kad_clap": {"value": -1.0, "ci95": [-1.4, -0.6], "n": 12, "verdict": "better"}},
    }
    flat = flat_metrics(metrics, ["base", "finetuned"], ["clap"])
    assert flat["eval/finetuned/clap/kad"] == 0.5 and flat["eval/reference/clap/reconstruction_kad"] == 0.05
    assert (flat["eval/delta/kad_clap"], flat["eval/delta/kad_clap_ci95_lo"], flat["eval/delta/kad_clap_ci95_hi"]) \
        == (-1.0, -1.4, -0.6)
