"""The synthetic demo corpus: files, ground truth, licence layout, levels, determinism and musical claims."""

from __future__ import annotations

import csv
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tunekit.corpus.synth import CATALOGUE, LICENCES, SynthConfig, plan_tracks, render_track, synthesize
from tunekit.corpus.synth_dsp import sing
from tunekit.errors import ConfigError, ConfigErrors

# Eight short tracks: the first eight catalogue slots cover every format, rate, level and licence kind.
SMALL = {"seed": 3, "n_tracks": 8, "min_seconds": 3.0, "max_seconds": 5.0, "quiet": True, "workers": 1}
NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
ENHARMONIC = {"Db": "C#", "D#": "Eb", "Gb": "F#", "G#": "Ab", "A#": "Bb"}


def _rows(root: Path) -> list[dict[str, str]]:
    with open(root / "ground_truth.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="session")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("synth") / "demo"
    return root, synthesize(SynthConfig(out=str(root), **SMALL))


def test_files_decode_as_declared(small: tuple[Path, dict]) -> None:
    root, summary = small
    rows = _rows(root)
    assert summary["n_tracks"] == len(rows) == 8
    assert summary["seconds"] == pytest.approx(sum(float(r["duration_s"]) for r in rows), abs=0.01)
    for row in rows:
        path = root / row["path"]
        assert path.suffix == "." + row["format"]
        assert "/" in row["path"] and not row["path"].startswith("/")  # in a style subfolder
        info = sf.info(str(path))
        assert info.samplerate == int(row["sample_rate"])
        assert info.channels == int(row["channels"])
        assert info.subtype == row["subtype"]
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
        duration = len(audio) / rate
        # lossy decoders may add or trim a few milliseconds of encoder padding
        tolerance = 0.06 if row["format"] in ("mp3", "ogg") else 1e-3
        assert duration == pytest.approx(float(row["duration_s"]), abs=tolerance)
        assert SMALL["min_seconds"] <= float(row["duration_s"]) <= SMALL["max_seconds"]
        peak = float(np.max(np.abs(audio)))
        assert 0.01 < peak <= 0.99, f"{path.name} peak {peak}"
        assert float(row["peak_dbfs"]) == pytest.approx(20 * np.log10(peak), abs=0.05)


def test_catalogue_coverage(small: tuple[Path, dict]) -> None:
    rows = _rows(small[0])
    assert {(r["format"], r["subtype"]) for r in rows} >= {
        ("wav", "PCM_16"), ("wav", "PCM_24"), ("flac", "PCM_24"), ("flac", "PCM_16"),
        ("mp3", "MPEG_LAYER_III"), ("ogg", "VORBIS"),
    }  # fmt: skip
    assert {r["sample_rate"] for r in rows} == {"44100", "48000"}
    assert {r["channels"] for r in rows} == {"1", "2"}
    assert {r["level"] for r in rows} == {"normal", "quiet", "loud", "peaky"}
    assert {r["has_vocals"] for r in rows} == {"True", "False"}
    assert {r["meter"] for r in rows} == {"3", "4"}
    assert {r["scale"] for r in rows} == {"major", "minor"}
    assert {r["license_spdx"] for r in rows} == {spdx for _, spdx in LICENCES.values()}
    assert {r["metadata"] for r in rows} == {"sidecar", "csv", "both", "none"}


def test_ground_truth_json_matches_csv(small: tuple[Path, dict]) -> None:
    root = small[0]
    data = json.loads((root / "ground_truth.json").read_text())
    assert data["generator"] == "tunekit corpus synth" and data["config"]["seed"] == SMALL["seed"]
    rows = _rows(root)
    assert [t["path"] for t in data["tracks"]] == [r["path"] for r in rows]
    for track, row in zip(data["tracks"], rows):
        assert {k: str(v) for k, v in track.items()} == row
        assert track["key"] == f"{track['tonic']} {track['scale']}"
        assert track["tonic"] in NOTE_NAMES
        assert track["meter"] == (3 if track["style"] == "waltz" else 4)
    readme = (root / "README.md").read_text()
    assert "CC0" in readme and "tunekit corpus synth" in readme and f"seed {SMALL['seed']}" in readme


def test_licence_metadata_layout(small: tuple[Path, dict]) -> None:
    root = small[0]
    with open(root / "metadata.csv", newline="") as f:
        csv_rows = {r["path"]: r for r in csv.DictReader(f)}
    assert all((root / p).is_file() for p in csv_rows)
    for row in _rows(root):
        sidecar = (root / row["path"]).with_suffix(".json")
        assert sidecar.is_file() == (row["metadata"] in ("sidecar", "both"))
        assert (row["path"] in csv_rows) == (row["metadata"] in ("csv", "both"))
        if row["metadata"] in ("sidecar", "both"):
            meta = json.loads(sidecar.read_text())
            assert meta["license"] == row["license"] and meta["title"] == row["title"]
            assert meta["instrumental"] is (row["has_vocals"] == "False")
            assert isinstance(meta["tags"], list)
        if row["metadata"] == "csv":
            assert csv_rows[row["path"]]["license"] == row["license"]
        if row["metadata"] == "both":  # the CSV disagrees; the sidecar is the truth
            assert csv_rows[row["path"]]["license"] not in ("", row["license"])
            assert csv_rows[row["path"]]["title"] != row["title"]
        if row["metadata"] == "none":
            assert row["license"] == row["license_spdx"] == ""
    written = {r["license"] for r in _rows(root)}
    assert "https://creativecommons.org/licenses/by-sa/4.0/" in written  # a Creative Commons URL
    assert "Attribution-NonCommercial 4.0 International" in written  # an FMA-style title
    assert {"CC0-1.0", "CC-BY-4.0", "CC-BY-ND-4.0"} <= written  # SPDX ids


def _ebur128(path: Path) -> float:
    """Integrated loudness from ffmpeg's ebur128 filter, a meter independent of the one synth uses."""
    import imageio_ffmpeg

    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostats", "-hide_banner", "-i", str(path), "-af", "ebur128",
           "-f", "null", "-"]  # fmt: skip
    err = subprocess.run(cmd, capture_output=True, text=True, check=True).stderr
    return float(re.findall(r"I:\s+(-?[\d.]+) LUFS", err)[-1])


def test_levels_with_an_independent_meter(small: tuple[Path, dict]) -> None:
    root = small[0]
    for row in _rows(root):
        measured = _ebur128(root / row["path"])
        assert measured == pytest.approx(float(row["loudness_lufs"]), abs=0.6), row["path"]
        peak = float(row["peak_dbfs"])
        if row["level"] == "quiet":
            assert measured == pytest.approx(-30.0, abs=0.6)
        elif row["level"] == "loud":
            assert measured == pytest.approx(-9.0, abs=1.0) and peak > -1.0
        elif row["level"] == "peaky":  # +gain to -14 LUFS would push peaks far above -1 dBTP
            assert measured < -20.0 and peak > -1.0 and peak + (-14.0 - measured) > 5.0
        else:
            assert -19.0 < measured < -12.0
            if row["format"] in ("wav", "flac"):
                assert peak <= -0.99


def test_same_seed_same_files_other_seed_other_music(small: tuple[Path, dict], tmp_path: Path) -> None:
    root = small[0]
    again = tmp_path / "again"
    synthesize(SynthConfig(out=str(again), **dict(SMALL, workers=2)))  # worker processes change nothing
    for row in _rows(root):
        a, b = root / row["path"], again / row["path"]
        if row["byte_deterministic"] == "True":
            assert a.read_bytes() == b.read_bytes(), row["path"]
        else:  # OGG streams get a random serial number; the audio itself is identical
            assert row["format"] == "ogg"
            assert np.array_equal(sf.read(str(a))[0], sf.read(str(b))[0])
    for name in ("ground_truth.csv", "ground_truth.json", "metadata.csv", "README.md"):
        assert (root / name).read_bytes() == (again / name).read_bytes()
    def facts(seed: int) -> list[tuple[int, int, float]]:
        return [(p.bpm, p.tonic, p.seconds) for p in plan_tracks(SynthConfig(**dict(SMALL, seed=seed)))]

    assert facts(SMALL["seed"] + 1) != facts(SMALL["seed"])


def test_rerun_is_a_no_op_and_other_settings_replace(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    cfg = dict(SMALL, n_tracks=2)
    synthesize(SynthConfig(out=str(out), **cfg))
    first = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    summary = synthesize(SynthConfig(out=str(out), **cfg))
    assert summary["up_to_date"] is True and summary["n_tracks"] == 2
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == first
    synthesize(SynthConfig(out=str(out), **dict(cfg, n_tracks=1, seed=9)))
    rows = _rows(out)
    audio = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.suffix in (".wav", ".flac"))
    assert audio == [r["path"] for r in rows] and len(rows) == 1  # the old tracks are gone
    # an interrupted run (no ground_truth.json yet) is still recognised as a synth corpus and replaced
    (out / "ground_truth.json").unlink()
    (out / "rock" / "07_left_over.wav").parent.mkdir(exist_ok=True)
    (out / "rock" / "07_left_over.wav").write_bytes(b"partial")
    summary = synthesize(SynthConfig(out=str(out), **dict(cfg, n_tracks=1, seed=9)))
    assert summary["up_to_date"] is False and not (out / "rock").exists()
    assert (out / "ground_truth.json").is_file()


def test_refuses_a_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError) as err:
        synthesize(SynthConfig(out=str(tmp_path), **dict(SMALL, n_tracks=1)))
    assert err.value.key == "out" and "overwrite=true" in str(err.value)
    synthesize(SynthConfig(out=str(tmp_path), overwrite=True, **dict(SMALL, n_tracks=1)))
    assert (tmp_path / "notes.txt").read_text() == "mine" and (tmp_path / "ground_truth.csv").is_file()


def test_invalid_settings_reported_together(tmp_path: Path) -> None:
    with pytest.raises(ConfigErrors) as err:
        synthesize(SynthConfig(out=str(tmp_path / "x"), n_tracks=0, min_seconds=10.0, max_seconds=5.0))
    assert len(err.value.problems) == 2
    assert "n_tracks" in str(err.value) and "max_seconds" in str(err.value)
    assert not (tmp_path / "x").exists()


def test_every_slot_renders_at_odd_short_lengths() -> None:
    """Bars rarely divide the duration; the last bar is cut, never overrun."""
    for plan in plan_tracks(SynthConfig(seed=11, n_tracks=12, min_seconds=2.0, max_seconds=7.0)):
        audio, sections = render_track(plan)
        assert audio.shape == (plan.slot.channels, round(plan.seconds * plan.slot.rate))
        assert np.isfinite(audio).all() and 0.0 < np.max(np.abs(audio)) <= 0.5 + 1e-9
        assert sum(bars for _, bars in sections) >= 1
    # a sung note starting at or after the end of the track is dropped, one running over it is cut
    rng = np.random.default_rng(0)
    voice = sing([(0.1, 0.3, 60.0), (0.9, 0.5, 62.0), (1.0, 0.3, 64.0), (1.2, 0.3, 64.0)], 44100, 44100, rng)
    assert voice.shape == (44100,) and np.isfinite(voice).all() and np.max(np.abs(voice[:13000])) > 0


def test_catalogue_first_eight_slots_cover_everything() -> None:
    first = CATALOGUE[:8]
    assert {s.licence for s in first} == set(LICENCES)
    assert sum(s.vocals for s in CATALOGUE) == len(CATALOGUE) // 3


@pytest.mark.integration
def test_essentia_finds_tempo_and_key(tmp_path: Path) -> None:
    """The musical claim: Essentia recovers the ground-truth tempo (within 4%) and key of full-length tracks."""
    es = pytest.importorskip("essentia.standard")
    import soxr

    root = tmp_path / "demo"
    cfg = SynthConfig(out=str(root), seed=0, n_tracks=5, min_seconds=30.0, max_seconds=30.0, quiet=True, workers=2)
    synthesize(cfg)
    rows = _rows(root)
    assert {r["style"] for r in rows} >= {"lofi_hiphop", "house", "ambient", "rock", "waltz"}
    tempo_ok = key_ok = 0
    for row in rows:
        audio, rate = sf.read(str(root / row["path"]), dtype="float32", always_2d=True)
        mono = audio.mean(axis=1)
        if rate != 44100:
            mono = soxr.resample(mono, rate, 44100)
        mono = np.ascontiguousarray(mono, dtype=np.float32)
        bpm = es.RhythmExtractor2013(method="multifeature")(mono)[0]
        key, scale, _ = es.KeyExtractor()(mono)
        tempo_ok += abs(bpm - float(row["bpm"])) <= 0.04 * float(row["bpm"])
        key_ok += (ENHARMONIC.get(key, key), scale) == (row["tonic"], row["scale"])
    assert tempo_ok == len(rows)
    assert key_ok >= 4
