"""`tunekit eval` end to end with tiny models: standalone on two folders of synthetic audio, and run mode on a
training run folder (a tiny MusicGen checkpoint, a LoRA adapter, a prep output with held-out windows)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_torch_thread")]

RATE = 44100


def _music(seed: int, seconds: float, rate: int = RATE, stereo: bool = False) -> np.ndarray:
    """A few decaying notes over noise: enough structure for every embedding to see something."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    x = 0.02 * rng.standard_normal(n)
    for start in np.arange(0, seconds, 0.25):
        f = 110 * 2 ** (rng.integers(0, 24) / 12)
        env = np.where(t >= start, np.exp(-(t - start) * 6), 0.0)
        x += 0.2 * env * np.sin(2 * np.pi * f * t)
    x = x.astype(np.float32)
    return np.stack([x, x], axis=1) if stereo else x


@pytest.fixture
def fresh_stats_cache(tmp_path, monkeypatch) -> str:
    """An empty cache for evaluation statistics; tiny models stay in the shared cache (models.cache_dir)."""
    from tunekit.paths import cache_dir

    shared = str(cache_dir())
    monkeypatch.setenv("TUNEKIT_CACHE", str(tmp_path / "cache"))
    return f"models.cache_dir={shared}"


def _eval(overrides: list[str]) -> int:
    from tunekit.config.compose import load_config
    from tunekit.eval.config import EvalConfig
    from tunekit.eval.run import run_eval

    return run_eval(load_config("eval", overrides, EvalConfig))


def _check_block(block: dict, embeddings: list[str], dims: dict[str, int]) -> None:
    for emb in embeddings:
        entry = block[emb]
        assert np.isfinite(entry["fad"]) and entry["n"] >= 2
        assert np.isfinite(entry["kad"]) and entry["kad_n"] == entry["n"]
        fit = entry["fad_inf"]
        if entry["n"] >= 3 * dims[emb]:  # subsets of at least 2·d frames, up to 1.5× that
            assert set(fit) >= {"a", "b", "r2", "sizes"} and fit["sizes"][-1] == entry["n"]
            assert fit["sizes"][0] >= 2 * dims[emb]
        else:
            assert fit is None and any("plain FAD only" in w for w in entry["warnings"]), entry["warnings"]


TINY_DIMS = {"clap": 32, "encodec": 16, "vggish": 128}  # the tiny embedders' dimensions


def test_standalone_scores_two_folders(tmp_path, fresh_stats_cache):
    gen, ref = tmp_path / "gen", tmp_path / "ref"
    (gen / "set2").mkdir(parents=True)
    ref.mkdir()
    lines = []
    for i in range(4):
        cid = f"set2/clip{i}" if i % 2 else f"clip{i}"
        sf.write(gen / f"{cid}.wav", _music(i, 2.0, 32000), 32000)
        lines.append(f"{cid}.wav,music number {i}")
        sf.write(ref / f"ref{i}.flac", _music(100 + i, 2.5, stereo=True), RATE)
    (tmp_path / "prompts.csv").write_text("id,prompt\n" + "\n".join(reversed(lines)) + "\n")
    out = tmp_path / "out"
    args = [f"generated={gen}", f"reference={ref}", f"out={out}", f"prompts={tmp_path / 'prompts.csv'}",
            "models=tiny", fresh_stats_cache, "logger=none", "fad_inf_steps=3"]
    assert _eval(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mode"] == "standalone" and set(metrics) >= {"generated", "reference", "versions", "models"}
    _check_block(metrics["generated"], ["clap", "encodec", "vggish"], TINY_DIMS)
    assert metrics["generated"]["encodec"]["fad_inf"] is not None  # 400 frames at d = 16
    assert "delta" not in metrics  # one generated set: nothing to pair
    for emb in ("clap", "encodec", "vggish"):
        assert metrics["reference"][emb]["kad_bandwidth"] > 0 and np.isfinite(metrics["reference"][emb]["reconstruction"]["kad"])
    assert any("generated clips are 2 s long (median) and reference clips 2.5 s" in w for w in metrics["warnings"])
    assert metrics["generated"]["vggish"]["n"] == 4 * 2  # 2 s per clip → two 0.96 s patches each
    assert metrics["generated"]["encodec"]["n"] == 4 * 100  # 50 frames per second
    assert metrics["generated"]["clap"]["n"] == 4  # one 10 s window per clip
    assert metrics["generated"]["clap_score_n"] == 4 and -1 <= metrics["generated"]["clap_score"] <= 1
    assert any("need n > d" in w for w in metrics["generated"]["clap"]["warnings"])
    for emb in ("clap", "encodec", "vggish"):
        assert np.isfinite(metrics["reference"][emb]["reconstruction"]["fad"])
    assert metrics["reference"]["cached"] == []
    html = (out / "report.html").read_text()
    assert html.count("<audio") >= 4 and 'data-metric="FAD encodec"' in html

    # A second evaluation against the same reference reads its statistics from the cache.
    assert _eval([*args, f"out={tmp_path / 'out2'}"]) == 0
    again = json.loads((tmp_path / "out2" / "metrics.json").read_text())
    assert sorted(again["reference"]["cached"]) == ["clap", "encodec", "vggish"]
    assert again["generated"]["vggish"]["fad"] == pytest.approx(metrics["generated"]["vggish"]["fad"], rel=1e-6)


def _check_wandb_media(run_dir: Path, data_dir: Path, n_clips: int, sets: tuple[str, ...]) -> None:
    """Every clip arrives as audio and as a spectrogram image, and the clips table's cells point at media files
    staged inside the evaluation folder (not in wandb's per-user data dir)."""
    from PIL import Image

    wavs = sorted((run_dir / "files" / "media" / "audio").rglob("*.wav"))
    pngs = sorted((run_dir / "files" / "media" / "images").rglob("*.png"))
    assert len(wavs) == len(pngs) == n_clips * len(sets), (wavs, pngs)
    assert all(sf.info(w).frames > 0 for w in wavs)
    with Image.open(pngs[0]) as img:
        assert img.size[0] > 50 and img.size[1] > 50
    tables = []
    for f in (data_dir / "artifacts" / "staging").iterdir():
        try:
            doc = json.loads(f.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(doc, dict) and doc.get("columns", [None])[0] == "id":
            tables.append(doc)
    assert tables, "the clips table was not staged in the evaluation folder"
    for table in tables:
        cells = [c for row in table["data"] for c in row[2:]]
        assert len(cells) == 2 * n_clips * len(sets)
        assert all(isinstance(c, dict) and c["_type"] in ("audio-file", "image-file") and c["path"] for c in cells), cells[:2]


def _training_run(root: Path, model_id: str) -> Path:
    """A run folder as `tunekit train` leaves it, around a tiny MusicGen (`model_id`'s variant) whose codec has
    random codebooks."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    from omegaconf import OmegaConf

    from tunekit.models.musicgen import load_musicgen
    from tunekit.train.lora import apply_lora

    prep = root / "prep"
    (prep / "audio").mkdir(parents=True)
    rows = []
    captions = ["warm lofi piano", "upbeat synth pop", "calm ambient pad"]
    for t, caption in enumerate(captions):
        sf.write(prep / "audio" / f"t{t}.flac", _music(t, 4.0, stereo=True), RATE)
        for w in range(2):
            rows.append({"window_id": f"t{t}-w{w}", "track_id": f"t{t}", "audio_path": f"audio/t{t}.flac",
                         "offset_s": 2.0 * w, "duration_s": 2.0, "split": "test" if t < 2 else "valid",
                         "caption": f"{caption}, part {w}"})
    pq.write_table(pa.Table.from_pylist(rows), prep / "windows.parquet")

    model, processor = load_musicgen(model_id, tiny=True)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        scale = float(model.audio_encoder.encoder(torch.randn(1, 1, 32000, generator=g) * 0.1).std())
        for layer in model.audio_encoder.quantizer.layers:
            cb = layer.codebook
            cb.embed.copy_(torch.randn(cb.embed.shape, generator=g) * scale)
            cb.embed_avg.copy_(cb.embed)
    base = root / "musicgen-tiny-codec"
    model.save_pretrained(base)
    processor.save_pretrained(base)

    run = root / "run"
    peft_model = apply_lora(model, 4, 8.0, 0.0, "attention")
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    peft_model.save_pretrained(str(run / "adapter"))
    OmegaConf.save(OmegaConf.create({
        "out": str(run), "model": {"name": str(base)}, "data": {"path": str(prep), "valid_split": "valid"},
        "models": {"tiny": False, "cache_dir": None},
        "logger": {"_target_": "tunekit.loggers.WandbLogger", "project": "tunekit-eval-test", "entity": None},
    }), run / "config.yaml")
    with open(run / "metrics.jsonl", "w") as f:
        for s in range(1, 11):
            f.write(json.dumps({"step": s, "loss": 7.0 / s**0.5, "lr": 2e-4, "valid_loss": 7.5 / s**0.5 if s % 5 == 0 else None}) + "\n")
    return run


@pytest.fixture(scope="module")
def training_run(tmp_path_factory) -> Path:
    return _training_run(tmp_path_factory.mktemp("runmode"), "facebook/musicgen-small")


def test_run_mode_scores_base_and_finetuned(training_run, fresh_stats_cache):
    run = training_run
    args = [f"run={run}", "models=tiny", fresh_stats_cache, "duration=1.0", "batch_size=4", "fad_inf_steps=3",
            "bootstrap=200"]
    assert _eval(args) == 0
    out = run / "eval"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mode"] == "run" and set(metrics) >= {"base", "finetuned", "reference"}
    for which in ("base", "finetuned"):
        _check_block(metrics[which], ["clap", "encodec", "vggish"], TINY_DIMS)
        assert metrics[which]["clap_score_n"] == 4  # the four held-out (test) windows' captions
        files = sorted(p.name for p in (out / "audio" / which).glob("*.wav"))
        assert files == ["t0-w0.wav", "t0-w1.wav", "t1-w0.wav", "t1-w1.wav"]
    base_gen = json.loads((out / "audio" / "base" / "generation.json").read_text())
    tuned_gen = json.loads((out / "audio" / "finetuned" / "generation.json").read_text())
    assert base_gen["seeds"] == tuned_gen["seeds"] and base_gen["settings"]["prompts"] == tuned_gen["settings"]["prompts"]
    assert base_gen["settings"]["prompts"]["t1-w0"] == "upbeat synth pop, part 0"
    a, _ = sf.read(out / "audio" / "base" / "t0-w0.wav")
    b, _ = sf.read(out / "audio" / "finetuned" / "t0-w0.wav")
    assert a.shape == b.shape == (32000,) and np.abs(a - b).max() > 1e-3  # the adapter changes the music
    assert metrics["base"]["encodec"]["fad"] != metrics["finetuned"]["encodec"]["fad"]
    ref = metrics["reference"]
    assert ref["n_clips"] == 4 and ref["splits"] == ["test"] and ref["clap_score_n"] == 4
    # 1 s clips against 2 s windows: each window keeps its first second.
    assert metrics["generation"]["duration"] == 1.0 and ref["crop"] == {**ref["crop"], "seconds": 1.0, "cropped": 4}
    assert ref["encodec"]["n"] == 4 * 50 and ref["vggish"]["n"] == 4
    delta = metrics["delta"]
    assert set(delta) == {f"{m}_{e}" for m in ("fad", "kad") for e in ("clap", "encodec", "vggish")} | {"clap_score"}
    for key, d in delta.items():
        assert d["n"] == 4 and d["resamples"] > 150 and d["ci95"][0] <= d["ci95"][1], (key, d)
        assert d["verdict"] is None and "at least 10" in d["note"]  # four prompts are too few for a verdict
    assert delta["fad_encodec"]["value"] == pytest.approx(metrics["finetuned"]["encodec"]["fad"] - metrics["base"]["encodec"]["fad"])
    assert delta["kad_vggish"]["value"] == pytest.approx(metrics["finetuned"]["vggish"]["kad"] - metrics["base"]["vggish"]["kad"])
    for emb in ("clap", "encodec", "vggish"):
        assert np.isfinite(ref[emb]["reconstruction"]["fad"]) and ref[emb]["reconstruction"]["codebooks"] == 4
    assert metrics["models"]["generator_base"].endswith("musicgen-tiny-codec")
    html = (out / "report.html").read_text()
    assert "Training curves" in html and html.count('<tr data-metric="') == 10
    assert html.count("<li data-delta=") == len(delta)
    assert "lr: 0.0002 (constant)" in html  # no schedule: one line, not a flat chart
    # Each prompt's card plays its held-out window beside the base and fine-tuned clips; four clips are too few
    # for outliers.
    cards = re.findall(r'<div class="clip" data-clip="([^"]+)">(.*?)</div></div></div>', html)
    assert sorted(cid for cid, _ in cards) == ["t0-w0", "t0-w1", "t1-w0", "t1-w1"]
    for _, card in cards:
        assert re.findall(r"<b>([^<]+)</b>", card) == ["reference (held-out)", "base", "fine-tuned"]
    assert html.count("<audio") == 3 * 4 and "too few to have outliers" in html
    assert "chroma" not in json.dumps(metrics) and "chroma cosine" not in html  # a text-only model
    assert "▲" not in html and "▼" not in html  # no verdict from four prompts, so no marks
    runs = list((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1 and runs[0].stat().st_size > 0
    _check_wandb_media(runs[0].parent, out / "wandb" / "data", n_clips=4, sets=("base", "finetuned"))

    # Unchanged settings: the clips and the reference statistics are reused.
    assert _eval([*args, "logger=none"]) == 0
    again = json.loads((out / "metrics.json").read_text())
    assert sorted(again["reference"]["cached"]) == ["clap", "encodec", "vggish"]
    assert again["finetuned"]["vggish"]["fad"] == pytest.approx(metrics["finetuned"]["vggish"]["fad"], rel=1e-9)


def test_melody_run_is_conditioned_on_its_windows_and_scored_by_chroma(tmp_path, fresh_stats_cache):
    """MusicGen-melody: each prompt is generated from its held-out window's chroma; metrics.json and the report
    carry the chroma cosine of each set against those melodies and its fine-tuned − base difference."""
    from tunekit.eval.chroma_cosine import Melody, clip_chroma

    run = _training_run(tmp_path, "facebook/musicgen-melody")
    args = [f"run={run}", "models=tiny", fresh_stats_cache, "duration=1.0", "batch_size=4", "embeddings=[encodec]",
            "clap_score=false", "reconstruction_floor=false", "fad_inf=false", "kad=false", "bootstrap=50",
            "logger=none"]
    assert _eval(args) == 0
    out = run / "eval"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["generation"]["melody"] and metrics["chroma_settings"]["hop"] == 4096
    prep = run.parent / "prep"
    for which in ("base", "finetuned"):
        assert json.loads((out / "audio" / which / "generation.json").read_text())["melody"] is True
        # Independently: each clip against the first second of its window, read straight from the prep audio.
        totals, frames = 0.0, 0
        for cid in ("t0-w0", "t0-w1", "t1-w0", "t1-w1"):
            track, w = cid.split("-w")
            window, rate = sf.read(prep / "audio" / f"{track}.flac", start=int(2.0 * int(w) * RATE), frames=RATE,
                                   dtype="float32", always_2d=True)
            clip, clip_rate = sf.read(out / "audio" / which / f"{cid}.wav", dtype="float32")
            c = clip_chroma(clip, clip_rate, Melody.of(window.T, rate))
            totals, frames = totals + c.total, frames + c.frames
        assert frames == 4 * 8  # ceil(32000 / 4096) frames per 1 s window
        assert metrics[which]["chroma_cosine"] == pytest.approx(totals / frames, abs=1e-12)
        assert metrics[which]["chroma_cosine_n"] == 4 and metrics[which]["chroma_cosine_frames"] == frames
    delta = metrics["delta"]["chroma_cosine"]
    assert delta["value"] == pytest.approx(metrics["finetuned"]["chroma_cosine"] - metrics["base"]["chroma_cosine"])
    assert delta["lower_is_better"] is False
    html = (out / "report.html").read_text()
    assert '<tr data-metric="chroma cosine">' in html and '<li data-delta="chroma_cosine"' in html


def test_run_mode_checks_frames_before_generating(training_run, fresh_stats_cache, monkeypatch):
    """One held-out prompt of 1 s gives one CLAP window and no VGGish patch: refused before any generation."""
    from tunekit.errors import ConfigErrors
    from tunekit.eval import run_mode

    def no_generation(*args, **kwargs):
        raise AssertionError("generation started before the sample sizes were checked")

    monkeypatch.setattr(run_mode, "generate_set", no_generation)
    args = [f"run={training_run}", "models=tiny", fresh_stats_cache, "logger=none", "n_samples=1", "duration=0.5"]
    with pytest.raises(ConfigErrors) as err:
        _eval(args)
    problems = err.value.problems
    assert any(p.startswith("clap: the generated set gives 1 frame(s)") and "n_samples" in p and "duration" in p
               for p in problems), problems
    assert any(p.startswith("vggish: the generated set gives 0 frame(s)") for p in problems), problems
    assert not any(p.startswith("encodec:") for p in problems), problems  # 25 frames at 50 Hz are enough
    assert not any("reference set" in p and p.startswith("encodec") for p in problems), problems

    # Without duration=, clips are as long as the reference windows (2 s): one CLAP window, still too few.
    with pytest.raises(ConfigErrors) as err:
        _eval([f"run={training_run}", "models=tiny", fresh_stats_cache, "logger=none", "n_samples=1"])
    problems = err.value.problems
    assert any(p.startswith("clap: the generated set gives 1 frame(s)") and "duration=2)" in p for p in problems), problems
    assert not any(p.startswith("vggish: the generated set") for p in problems), problems  # two 0.96 s patches


def test_frames_for_seconds_matches_the_embedders():
    from tunekit.eval.config import EvalConfig
    from tunekit.eval.embeddings import embed_items, frames_for_seconds
    from tunekit.eval.evaluate import load_embedders
    from tunekit.models.config import ModelsConfig

    config = EvalConfig(models=ModelsConfig(tiny=True))
    embedders = load_embedders(config)
    lengths = [0.5, 0.97, 2.0, 14.0, 16.0, 31.0]
    clips = [(f"c{i}", _music(i, s, 32000), 32000) for i, s in enumerate(lengths)]
    frames = embed_items(embedders, clips, batch_size=4)
    for e in embedders:
        got = [len(frames[e.name][f"c{i}"]) for i in range(len(lengths))]
        assert [frames_for_seconds(e, s) for s in lengths] == got, (e.name, got)
