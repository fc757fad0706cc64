"""Tagging: Essentia tempo/key on generated signals, metadata mapping, merging, CLAP zero-shot, the stage."""

from __future__ import annotations

import csv
import json
import logging

import numpy as np
import pytest

from tunekit.errors import StageUnavailableError
from tunekit.prep.tag import TagConfig
from tunekit.prep.tag_dsp import (
    aggregate_features,
    dsp_tags,
    essentia_features,
    octave_related,
    tempo_confirmed,
    track_dsp_tags,
    window_dsp_tags,
)
from tunekit.prep.tag_semantic import (
    check_effnet_request,
    clap_audio_embedding,
    clap_probabilities,
    clap_zero_shot,
    merge_tags,
    metadata_tags,
    select_labels,
)
from tunekit.prep.vocab import find_mentions, load_vocabularies

SR = 44100
VOCAB = load_vocabularies()
NOTE = {"C": 0, "C#": 1, "D": 2, "Eb": 3, "E": 4, "F": 5, "F#": 6, "G": 7, "Ab": 8, "A": 9, "Bb": 10, "B": 11}


def click_track(bpm: float, seconds: float = 12.0, rate: int = SR) -> np.ndarray:
    """Stereo clicks (short 1.5 kHz bursts) on every beat, accent on each fourth."""
    n = int(seconds * rate)
    x = np.zeros(n, np.float32)
    t = np.arange(int(0.02 * rate)) / rate
    click = np.sin(2 * np.pi * 1500 * t) * np.exp(-t * 250)
    for i in range(int(seconds * bpm / 60)):
        s = int(round(i * 60 / bpm * rate))
        m = min(click.size, n - s)
        x[s : s + m] += (1.0 if i % 4 == 0 else 0.6) * click[:m]
    return np.stack([x, x])


def progression(tonic: str, scale: str, seconds: float = 12.0, rate: int = SR) -> np.ndarray:
    """I-IV-V-I (or i-iv-V-i) triads with a bass on the root, harmonic tones, 2 s per chord."""
    minor = scale == "minor"
    chords = [(0, minor), (5, minor), (7, False), (0, minor)]
    seg = int(2.0 * rate)
    n_seg = int(seconds / 2.0)
    out = np.zeros(seg * n_seg)
    t = np.arange(seg) / rate
    env = np.exp(-t * 0.7)
    root0 = 48 + NOTE[tonic]  # C3..B3
    for j in range(n_seg):
        r, is_minor = chords[j % 4]
        notes = [root0 + r - 12] + [root0 + r + iv for iv in (0, 3 if is_minor else 4, 7)] + [root0 + r + 12]
        for midi in notes:
            f = 440.0 * 2 ** ((midi - 69) / 12)
            for h in (1, 2, 3):
                out[j * seg : (j + 1) * seg] += (0.08 / h) * np.sin(2 * np.pi * f * h * t) * env
    x = out.astype(np.float32)
    return np.stack([x, x])


def test_vocabularies_match_mtg_jamendo_and_demo_styles():
    assert len(VOCAB.moods.labels) == 56 and len(VOCAB.instruments.labels) == 40
    for style in ("lo-fi hip-hop", "house", "ambient", "rock", "waltz", "jazz", "techno", "drum and bass",
                  "bossa nova", "classical", "pop", "folk", "cinematic"):  # fmt: skip
        assert style in VOCAB.genres.labels
    labels = [lab for _, v in VOCAB.items() for lab in v.labels]
    assert len(labels) == len(set(labels))
    assert VOCAB.instruments.match("electricguitar") == "electric guitar"
    assert VOCAB.instruments.match("acousticbassguitar") == "acoustic bass guitar"
    assert VOCAB.genres.match("drumnbass") == "drum and bass"
    assert VOCAB.instruments.match("Pads") == "pad"
    assert find_mentions("warm electric piano over a drum and bass groove", VOCAB) == [
        ("instruments", "electric piano"), ("genres", "drum and bass")]  # fmt: skip


@pytest.mark.parametrize("bpm", [84.0, 122.0, 140.0])
def test_tempo_of_click_track(bpm):
    f = essentia_features(click_track(bpm), SR)
    assert abs(f["bpm"] - bpm) <= 0.01 * bpm, f
    assert f["bpm_confidence"] >= TagConfig().tempo_min_confidence, f
    tags = dsp_tags(f, TagConfig())
    assert tags["bpm"] == f["bpm"] and tags["bpm_uncertain"] is False


@pytest.mark.parametrize("key", ["A minor", "Eb major", "F# minor"])
def test_key_of_chord_progression(key):
    tonic, scale = key.split()
    x = progression(tonic, scale)
    f = essentia_features(np.ascontiguousarray(np.stack([x[0], x[1]])), SR)
    assert f["key"] == key, f
    assert f["key_strength"] >= TagConfig().key_min_strength
    # Resampled input gives the same answer (features always run at 44.1 kHz).
    import soxr

    x48 = soxr.resample(x.T, SR, 48000).T
    assert essentia_features(x48, 48000)["key"] == key


def test_noise_is_uncertain_and_silence_has_no_values():
    rng = np.random.default_rng(0)
    f = essentia_features((0.1 * rng.standard_normal((2, SR * 10))).astype(np.float32), SR)
    tags = dsp_tags(f, TagConfig())
    assert tags["key_uncertain"] and tags["key"] is None and tags["key_estimate"] is not None
    silent = essentia_features(np.zeros((2, SR * 5), np.float32), SR)
    assert silent["bpm"] is None and silent["key"] is None and dsp_tags(silent, TagConfig())["bpm_uncertain"]


def test_track_and_window_rule():
    cfg = TagConfig()
    track = {"bpm": 120.0, "bpm_confidence": 4.0, "key": "A minor", "key_strength": 0.8}
    trk = track_dsp_tags(track, [], cfg)
    half = {"bpm": 60.2, "bpm_confidence": 4.5, "key": "C major", "key_strength": 0.9}
    w = window_dsp_tags(half, trk, cfg)  # an octave error and another key: the confident track wins
    assert (w["bpm"], w["key"], w["bpm_uncertain"], w["bpm_estimate"]) == (120.0, "A minor", False, 60.2)
    change = {"bpm": 96.0, "bpm_confidence": 4.6, "key": "D minor", "key_strength": 0.9}
    w = window_dsp_tags(change, trk, cfg)  # a confident, more confident, different tempo: a real change
    assert (w["bpm"], w["key"]) == (96.0, "A minor")
    weak = {"bpm": 97.0, "bpm_confidence": 2.0, "key": "E major", "key_strength": 0.3}
    w = window_dsp_tags(change, track_dsp_tags(weak, [], cfg), cfg)
    assert (w["bpm"], w["key"]) == (96.0, "D minor")
    w = window_dsp_tags({"bpm": 90.0, "bpm_confidence": 1.0, "key": "C major", "key_strength": 0.2},
                        track_dsp_tags(weak, [], cfg), cfg)  # fmt: skip
    assert w["bpm"] is None and w["bpm_uncertain"] and w["key"] is None and w["bpm_estimate"] == 90.0
    # Windows that agree (an octave error allowed, half exact) confirm a tempo of moderate confidence.
    agree = [{"bpm": 97.5}, {"bpm": 194.0}, {"bpm": 96.6}]
    assert tempo_confirmed(weak, agree, cfg) and track_dsp_tags(weak, agree, cfg)["bpm"] == 97.0
    assert not tempo_confirmed(weak, [{"bpm": 97.5}, {"bpm": 110.0}, {"bpm": 96.6}], cfg)
    assert not tempo_confirmed(weak, [{"bpm": 97.5}], cfg)
    assert not tempo_confirmed({**weak, "bpm_confidence": 1.0}, agree, cfg)
    assert octave_related(60.0, 120.0) and not octave_related(100.0, 120.0)
    agg = aggregate_features([half, change, {**change, "bpm_confidence": 1.0, "key_strength": 0.5}])
    assert agg["bpm"] == 96.0 and agg["key"] == "D minor" and agg["key_strength"] == 0.7


def test_metadata_tags_map_onto_vocabularies():
    got = metadata_tags(
        "Lo-Fi Hip-Hop",
        ["genre---drumnbass", "mood/theme---happy", "instrument---electricguitar", "Pads", "chill",
         "Zed Quorum", "vocals", "instrument---happy"],
        VOCAB,
    )  # fmt: skip
    assert got == {"genres": ["lo-fi hip-hop", "drum and bass"], "moods": ["happy"],
                   "instruments": ["electric guitar", "pad", "voice"]}  # fmt: skip
    assert metadata_tags(None, "rock;guitar, calm", VOCAB) == {"genres": ["rock"], "moods": ["calm"],
                                                               "instruments": ["guitar"]}  # fmt: skip


def test_merge_tags_trusts_metadata_and_records_sources():
    meta = {"genres": ["rock"], "moods": [], "instruments": ["drums"]}
    clap = {"genres": [("metal", 0.6)], "moods": [("energetic", 0.5), ("dark", 0.3), ("sad", 0.2)],
            "instruments": [("drums", 0.5), ("electric guitar", 0.4), ("bass", 0.3)]}  # fmt: skip
    got = merge_tags(meta, [("clap", clap)], {"genres": 1, "moods": 2, "instruments": 2})
    assert got["genres"] == ["rock"]  # a metadata genre is final
    assert got["moods"] == ["energetic", "dark"]
    assert got["instruments"] == ["drums", "electric guitar", "bass"]
    assert got["tag_sources"] == {"rock": "metadata", "drums": "metadata", "energetic": "clap", "dark": "clap",
                                  "electric guitar": "clap", "bass": "clap"}  # fmt: skip
    no_meta = merge_tags({}, [("clap", clap)], {"genres": 1, "moods": 0, "instruments": 1})
    assert no_meta["genres"] == ["metal"] and no_meta["moods"] == [] and no_meta["instruments"] == ["drums"]


def test_zero_shot_scoring_ranks_the_matching_label():
    rng = np.random.default_rng(1)
    text = np.linalg.qr(rng.standard_normal((16, 5)))[0].T  # five orthonormal "label" embeddings
    audio = text[3] + 0.3 * text[1]
    audio /= np.linalg.norm(audio)
    p = clap_probabilities(audio, text, logit_scale=30.0)
    assert abs(p.sum() - 1) < 1e-9 and p.argmax() == 3
    labels = ["a", "b", "c", "d", "e"]
    assert [lab for lab, _ in select_labels(p, labels, 2, 0.0)] == ["d", "b"]
    assert select_labels(p, labels, 5, 0.5) == [("d", round(float(p[3]), 4))]


def test_effnet_requested_without_tensorflow_is_a_clear_error(tmp_path):
    with pytest.raises(StageUnavailableError, match="essentia-tensorflow"):
        check_effnet_request(TagConfig(effnet_models_dir=str(tmp_path)))
    assert TagConfig(key_profile="nope", clap_threshold=2.0).problems() != []


@pytest.fixture(scope="module")
def tiny_clap():
    from tunekit.models.clap import load_clap

    return load_clap(tiny=True)


@pytest.mark.integration
def test_clap_zero_shot_with_tiny_model(tiny_clap):
    import soxr

    model, processor = tiny_clap
    rng = np.random.default_rng(2)
    x = (0.1 * rng.standard_normal((2, 44100 * 15))).astype(np.float32)
    got = clap_zero_shot(x, 44100, model, processor, VOCAB.genres.labels, top_k=3, threshold=0.0)
    assert len(got) == 3 and all(lab in VOCAB.genres.labels for lab, _ in got)
    assert [s for _, s in got] == sorted((s for _, s in got), reverse=True)
    # Embeddings are taken at 48 kHz: 44.1 kHz input equals the same audio resampled beforehand, and
    # 15 s is a 10 s piece plus a 5 s piece, averaged.
    e44 = clap_audio_embedding(x, 44100, model, processor)
    x48 = soxr.resample(x.T, 44100, 48000, quality="HQ").T
    first = clap_audio_embedding(x48[:, :480000], 48000, model, processor)
    second = clap_audio_embedding(x48[:, 480000:], 48000, model, processor)
    mean = (first + second) / np.linalg.norm(first + second)
    assert abs(np.linalg.norm(e44) - 1) < 1e-6 and np.allclose(e44, mean, atol=1e-5)
    assert not np.allclose(first, second, atol=1e-3)


def test_loaded_taggers_are_reused_and_follow_the_config(tiny_clap, monkeypatch):
    """One CLAP load per checkpoint and device in a process; thresholds come from the latest config."""
    from tunekit.models import clap
    from tunekit.models.config import ModelsConfig
    from tunekit.prep.tag_semantic import ModelCache, clap_tagger

    loads = []

    def load_clap(name, **kwargs):
        loads.append((name, kwargs["device"]))
        return tiny_clap

    monkeypatch.setattr(clap, "load_clap", load_clap)
    cache, models = ModelCache(), ModelsConfig(tiny=True)
    first = clap_tagger(TagConfig(device="cpu"), models, cache)
    again = clap_tagger(TagConfig(device="cpu", clap_threshold=0.5), models, cache)
    assert again is first and len(cache) == 1 and again.cfg.clap_threshold == 0.5
    assert loads == [(TagConfig().clap_model, "cpu")], loads
    cache.clear()
    assert len(cache) == 0


def _write_track(path, audio: np.ndarray) -> None:
    from tunekit.audio.io import write_audio

    write_audio(path, audio, SR)


@pytest.mark.integration
def test_preflight_refuses_a_checkpoint_that_is_not_clap(tiny_clap):
    """Checked before any work: a non-CLAP `tag.clap_model` would otherwise fail every window."""
    from tunekit.models.config import ModelsConfig
    from tunekit.models.registry import resolve
    from tunekit.prep.tag import TagConfig, tag_preflight

    models = ModelsConfig(tiny=True)
    assert tag_preflight(TagConfig(), models) == []
    codec_folder = resolve("facebook/encodec_32khz", tiny=True)
    (problem,) = tag_preflight(TagConfig(clap_model=codec_folder), models)
    assert problem.startswith("tag.clap_model: ") and "is a encodec checkpoint, not CLAP" in problem
    assert tag_preflight(TagConfig(clap_model=codec_folder, clap=False), models) == []


def test_tag_and_caption_stages_on_a_track(tmp_path, tiny_clap, caplog):
    """tag_window on each window, tag_tracks over the track, then caption_window: the columns of the contract."""
    from tunekit.models.config import ModelsConfig
    from tunekit.prep.caption import CaptionConfig, caption_window
    from tunekit.prep.rows import StageContext, TrackRow, WindowRow
    from tunekit.prep.tag import tag_tracks, tag_window

    chords = progression("A", "minor", seconds=24.0)
    clicks = click_track(96.0, seconds=24.0)
    _write_track(tmp_path / "audio" / "trk.flac", 0.7 * chords + 0.5 * clicks)
    windows = [
        WindowRow(f"trk_{i:04d}", "trk", i, "audio/trk.flac", 12.0 * i, 12.0, 12.0 * i, int(12 * SR * i), 12 * SR, SR)
        for i in range(2)
    ]
    track = TrackRow("trk", "a.wav", genre="lo-fi hip-hop", tags=["calm", "Zed Quorum"], artist="Zed Quorum",
                     instrumental=None, extra={"separated": True}, windows=windows, duration_s=24.0)  # fmt: skip
    ctx = StageContext(str(tmp_path), str(tmp_path), str(tmp_path / "cache"), models=ModelsConfig(tiny=True))
    cfg = TagConfig(clap_threshold=0.0)
    mapped = [tag_window(w, cfg, ctx) for w in windows]
    assert "track" in mapped[0].extra["_tag_raw"] and "track" not in mapped[1].extra["_tag_raw"]
    with caplog.at_level(logging.INFO, logger="tunekit.prep"):
        (out,) = tag_tracks([TrackRow(**{**track.__dict__, "windows": mapped})], cfg, ctx)
    assert "left out of captions" in caplog.text
    assert out.extra["key"] == "A minor" and abs(out.extra["bpm"] - 96.0) <= 0.04 * 96.0
    for w in out.windows:
        e = w.extra
        assert "_tag_raw" not in e and e["instrumental"] is True
        assert e["key"] == "A minor" and not e["key_uncertain"] and abs(e["bpm"] - 96.0) <= 0.04 * 96.0
        sources = json.loads(e["tag_sources"])
        assert e["genres"] == ["lo-fi hip-hop"] and sources["lo-fi hip-hop"] == "metadata"
        assert e["moods"][0] == "calm" and sources["calm"] == "metadata"
        assert "clap:tiny" in sources.values() and len(e["instruments"]) == cfg.clap_top_k_instruments
        cap = caption_window(w, CaptionConfig(), ctx).extra
        clap_labels = [lab for lab, src in sources.items() if src == "clap:tiny"]
        mentioned = {lab for _, lab in find_mentions(" ".join(cap["captions"]), VOCAB)}
        assert not mentioned & set(clap_labels) - {"beat"}, (cap["captions"], clap_labels)
        assert "lo-fi hip-hop" in cap["caption"] and "A minor" in " ".join(cap["captions"])
        assert "quorum" not in " ".join(cap["captions"]).lower() and cap["instrument"] == ""


@pytest.mark.integration
def test_tempo_and_key_accuracy_on_rendered_demo_subset(tmp_path):
    """Essentia on synthesised demo tracks (one per style) against their ground truth: tempo within 4 % on
    >= 90 % and key exact on >= 80 %; every right tempo and key is confident enough to be stated."""
    from tunekit.audio.io import read_audio
    from tunekit.corpus.synth import SynthConfig, synthesize

    synthesize(SynthConfig(out=str(tmp_path / "demo"), n_tracks=6, min_seconds=16.0, max_seconds=20.0, quiet=True))
    rows = list(csv.DictReader(open(tmp_path / "demo" / "ground_truth.csv", encoding="utf-8")))
    assert len({r["style"] for r in rows}) == 6
    tempo_ok = key_ok = 0
    for row in rows:
        audio, rate = read_audio(tmp_path / "demo" / row["path"])
        half = audio.shape[1] // 2
        windows = [essentia_features(audio[:, :half], rate), essentia_features(audio[:, half:], rate)]
        tags = track_dsp_tags(essentia_features(audio, rate), windows, TagConfig())
        bpm = float(row["bpm"])
        right_tempo = abs(tags["bpm_estimate"] - bpm) <= 0.04 * bpm
        tempo_ok += right_tempo
        key_ok += tags["key_estimate"] == row["key"]
        assert not right_tempo or not tags["bpm_uncertain"], (row["path"], tags)
        assert tags["key_estimate"] != row["key"] or not tags["key_uncertain"], (row["path"], tags)
    assert tempo_ok / len(rows) >= 0.9 and key_ok / len(rows) >= 0.8, (tempo_ok, key_ok)
