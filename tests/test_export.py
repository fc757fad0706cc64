"""Exports: audiocraft manifests and sidecars, Hugging Face Parquet with the Audio feature, attribution."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tunekit.errors import ConfigError, ConfigErrors
from tunekit.export.config import ExportConfig
from tunekit.export.run import run_export

RATE = 44100
WINDOW = 3.0

# audiocraft's MusicInfo fields and what its loader accepts for each (music_dataset.py / info_audio_dataset.py).
MUSIC_INFO_TYPES = {
    "title": str, "artist": str, "key": str, "genre": str, "description": str, "name": str, "instrument": str,
    "moods": list, "keywords": list,
}
AUDIO_META_KEYS = ["path", "duration", "sample_rate", "amplitude", "weight", "info_path"]


def _write_prep_output(root: Path) -> dict[str, np.ndarray]:
    """A minimal prep output: two tracks (train: 2 full windows, valid: 1 full + 1 partial), the contract
    columns, caption/tag columns on the train track only, and the attribution files."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    (root / "audio").mkdir(parents=True)
    tracks, windows, audio = [], [], {}
    specs = [("trk_aaaaaaaaaaaa", "train", 6.0, "https://creativecommons.org/licenses/by/4.0/", "CC-BY-4.0"),
             ("trk_bbbbbbbbbbbb", "valid", 4.5, "CC0-1.0", "CC0-1.0")]
    for track_id, split, seconds, raw, spdx in specs:
        x = (0.2 * rng.standard_normal((2, int(seconds * RATE)))).astype(np.float32)
        path = root / "audio" / f"{track_id}.flac"
        sf.write(path, x.T, RATE, subtype="PCM_24")
        audio[track_id], _ = sf.read(path, dtype="float32", always_2d=True)
        tracks.append({"track_id": track_id, "status": "ok", "license": spdx, "license_raw": raw,
                       "artist": f"Artist {track_id[-1]}", "title": f"Title {track_id[-1]}", "genre": "Ambient",
                       "attribution": None, "source": "demo", "source_id": track_id[-4:], "url": None,
                       "split": split, "audio_path": f"audio/{track_id}.flac"})
        start = 0
        index = 0
        while start < x.shape[1]:
            frames = min(int(WINDOW * RATE), x.shape[1] - start)
            captioned = split == "train"
            windows.append({
                "window_id": f"{track_id}_{index:04d}", "track_id": track_id, "window_index": index,
                "audio_path": f"audio/{track_id}.flac", "offset_s": start / RATE, "duration_s": frames / RATE,
                "start_s": start / RATE, "offset_frames": start, "frames": frames, "sample_rate": RATE,
                "license": spdx, "split": split,
                "caption": f"calm ambient piece {index}" if captioned else None,
                "captions": [f"calm ambient piece {index}", "a calm ambient piece", "ambient"] if captioned else None,
                "description": f"calm ambient piece {index}" if captioned else None,
                "genre": "ambient" if captioned else "", "genres": ["ambient"] if captioned else [],
                "moods": ["calm", "dreamy"] if captioned else [], "keywords": ["pad"] if captioned else [],
                "instrument": "synth, piano" if captioned else "", "instruments": ["synth", "piano"] if captioned else [],
                "bpm": 92.0 if captioned else None, "key": "A minor" if captioned else None,
            })
            start += frames
            index += 1
    pq.write_table(pa.Table.from_pylist(tracks), root / "tracks.parquet")
    pq.write_table(pa.Table.from_pylist(windows), root / "windows.parquet")
    (root / "ATTRIBUTION.md").write_text("# Attribution\n\n- “Title a” by Artist a, licensed under CC BY 4.0\n")
    (root / "attribution.csv").write_text("track_id,title,artist,license,credit\ntrk_aaaaaaaaaaaa,Title a,Artist a,"
                                          "CC-BY-4.0,“Title a” by Artist a\n")
    return audio


@pytest.fixture
def prep(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path / "prep"
    return root, _write_prep_output(root)


def test_audiocraft_manifest_sidecars_and_audio(prep, tmp_path: Path) -> None:
    data, audio = prep
    out = tmp_path / "ac"
    assert run_export(ExportConfig(format="audiocraft", data=str(data), out=str(out))) == 0

    rows = {s: [json.loads(x) for x in (out / s / "data.jsonl").read_text().splitlines()] for s in ("train", "valid")}
    assert [len(rows["train"]), len(rows["valid"])] == [2, 2]
    assert not (out / "test").exists()
    for split, items in rows.items():
        for i, meta in enumerate(items):
            assert list(meta) == AUDIO_META_KEYS
            assert meta["info_path"] is None and meta["weight"] is None and meta["sample_rate"] == RATE
            path = Path(meta["path"])
            assert path.is_absolute() and path.suffix == ".flac" and path.parent == out / "audio" / split
            got, rate = sf.read(path, dtype="float32", always_2d=True)
            track_id = path.stem.rsplit("_", 1)[0]
            start = i * int(WINDOW * RATE)
            np.testing.assert_array_equal(got, audio[track_id][start:start + got.shape[0]])  # 24-bit → 24-bit
            assert meta["duration"] == pytest.approx(got.shape[0] / RATE)
            assert meta["amplitude"] == pytest.approx(float(np.abs(got).max()))

            info = json.loads(path.with_suffix(".json").read_text())
            for key, kind in MUSIC_INFO_TYPES.items():
                assert isinstance(info[key], kind), (key, info[key])
            assert info["bpm"] is None or isinstance(info["bpm"], float)
            assert info["name"] == path.stem and info["track_id"] == track_id
    partial = rows["valid"][1]
    assert partial["duration"] == pytest.approx(1.5)  # the final partial window keeps its true length
    train = json.loads(Path(rows["train"][1]["path"]).with_suffix(".json").read_text())
    assert train["description"] == "calm ambient piece 1" and train["instrument"] == "synth, piano"
    assert train["moods"] == ["calm", "dreamy"] and train["bpm"] == 92.0 and train["key"] == "A minor"
    assert train["title"] == "Title a" and train["artist"] == "Artist a" and train["keywords"] == ["pad"]
    assert len(train["captions"]) == 3
    valid = json.loads(Path(rows["valid"][0]["path"]).with_suffix(".json").read_text())
    assert valid["description"] == "" and valid["genre"] == "Ambient" and valid["bpm"] is None

    # Attribution travels with the export; the README lists each licence with its counts.
    for name in ("ATTRIBUTION.md", "attribution.csv"):
        assert (out / name).read_bytes() == (data / name).read_bytes()
    text = (out / "README.md").read_text()
    assert "| CC BY 4.0 | 1 | 2 |" in text and "| CC0 1.0 | 1 | 2 |" in text
    assert "https://creativecommons.org/licenses/by/4.0/" in text
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["windows"] == 4 and manifest["uncaptioned"] == 2


def test_audiocraft_relative_paths_and_split(prep, tmp_path: Path) -> None:
    data, _ = prep
    out = tmp_path / "ac"
    run_export(ExportConfig(format="audiocraft", data=str(data), out=str(out), split="valid",
                            relative_to=str(tmp_path), audio_format="wav"))
    assert not (out / "train").exists()
    metas = [json.loads(x) for x in (out / "valid" / "data.jsonl").read_text().splitlines()]
    for meta in metas:
        assert not Path(meta["path"]).is_absolute() and meta["path"].endswith(".wav")
        assert (tmp_path / meta["path"]).is_file()
        assert sf.info(tmp_path / meta["path"]).subtype == "PCM_24"


def _expected_arrow(feature: dict):
    """The Arrow type `datasets` maps a serialised feature to (Value, Sequence, Audio)."""
    import pyarrow as pa

    kind = feature["_type"]
    if kind == "Audio":
        return pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    if kind == "Sequence":
        return pa.list_(_expected_arrow(feature["feature"]))
    assert kind == "Value"
    return {"string": pa.string(), "float64": pa.float64(), "int64": pa.int64()}[feature["dtype"]]


def test_hf_parquet_audio_feature_and_shards(prep, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    data, audio = prep
    out = tmp_path / "hf"
    run_export(ExportConfig(format="hf", data=str(data), out=str(out), shard_mb=0.1))
    files = sorted(p.name for p in (out / "data").iterdir())
    # Each 3 s window is ~0.7 MB of 24-bit FLAC noise, so a 0.1 MB limit puts one window per shard.
    assert files == [f"{s}-{i:05d}-of-00002.parquet" for s in ("train", "valid") for i in range(2)]

    table = pq.read_table(out / "data" / "train-00000-of-00002.parquet")
    features = json.loads(table.schema.metadata[b"huggingface"])["info"]["features"]
    assert features["audio"] == {"sampling_rate": RATE, "_type": "Audio"}
    assert features["captions"]["_type"] == "Sequence" and features["caption"] == {"dtype": "string", "_type": "Value"}
    for f in table.schema:
        assert f.type == _expected_arrow(features[f.name]), f.name

    rows = [r for name in files for r in pq.read_table(out / "data" / name).to_pylist()]
    assert [r["window_id"] for r in rows] == ["trk_aaaaaaaaaaaa_0000", "trk_aaaaaaaaaaaa_0001",
                                              "trk_bbbbbbbbbbbb_0000", "trk_bbbbbbbbbbbb_0001"]
    for r in rows:
        got, rate = sf.read(io.BytesIO(r["audio"]["bytes"]), dtype="float32", always_2d=True)
        start = int(r["window_id"][-4:]) * int(WINDOW * RATE)
        assert rate == RATE and r["audio"]["path"] == f"{r['window_id']}.flac"
        np.testing.assert_array_equal(got, audio[r["track_id"]][start:start + got.shape[0]])
    assert rows[0]["caption"] == "calm ambient piece 0" and rows[0]["moods"] == ["calm", "dreamy"]
    assert rows[0]["license"] == "CC-BY-4.0" and rows[2]["caption"] == "" and rows[3]["duration_s"] == 1.5
    readme = (out / "README.md").read_text()
    assert readme.startswith("---\nlicense: other\nconfigs:") and "path: data/valid-*" in readme
    assert (out / "attribution.csv").read_bytes() == (data / "attribution.csv").read_bytes()


def test_hf_export_loads_with_the_datasets_library(prep, tmp_path: Path, monkeypatch) -> None:
    """`datasets.load_dataset` reads the export by its README configs: both splits, the Audio feature at the
    window rate, the tag columns, and FLAC bytes that decode to the prepared audio."""
    import datasets

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    data, audio = prep
    out = tmp_path / "hf"
    run_export(ExportConfig(format="hf", data=str(data), out=str(out)))

    loaded = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "hf_cache"))
    assert sorted(loaded) == ["train", "valid"]
    assert loaded["train"].num_rows == 2 and loaded["valid"].num_rows == 2
    assert loaded["train"].features["audio"] == datasets.Audio(sampling_rate=RATE)
    assert loaded["train"]["window_id"] == ["trk_aaaaaaaaaaaa_0000", "trk_aaaaaaaaaaaa_0001"]
    loaded = loaded.cast_column("audio", datasets.Audio(decode=False))  # decoding to arrays needs torchcodec
    assert loaded["train"][0]["moods"] == ["calm", "dreamy"] and loaded["valid"][1]["duration_s"] == 1.5
    for r in loaded["valid"]:
        got, rate = sf.read(io.BytesIO(r["audio"]["bytes"]), dtype="float32", always_2d=True)
        start = int(r["window_id"][-4:]) * int(WINDOW * RATE)
        assert rate == RATE
        np.testing.assert_array_equal(got, audio[r["track_id"]][start:start + got.shape[0]])

    by_glob = datasets.load_dataset("parquet", data_files={"train": str(out / "data" / "train-*.parquet")},
                                    cache_dir=str(tmp_path / "hf_cache"))
    assert by_glob["train"]["caption"] == loaded["train"]["caption"]


def test_errors_name_what_to_change(prep, tmp_path: Path) -> None:
    data, _ = prep
    out = tmp_path / "ac"
    with pytest.raises(ConfigErrors) as bad:
        run_export(ExportConfig(format="zip", split="dev", audio_format="mp3", shard_mb=0))
    assert all(k in str(bad.value) for k in ("format=", "split=", "audio_format=", "shard_mb=", "'data'", "'out'"))
    with pytest.raises(ConfigError, match="not a prep output"):
        run_export(ExportConfig(data=str(tmp_path), out=str(out)))
    with pytest.raises(ConfigError, match="overlap"):
        run_export(ExportConfig(data=str(data), out=str(data / "export")))

    run_export(ExportConfig(data=str(data), out=str(out), split="valid"))
    with pytest.raises(ConfigError, match="overwrite=true"):
        run_export(ExportConfig(data=str(data), out=str(out)))
    run_export(ExportConfig(data=str(data), out=str(out), overwrite=True, split="train"))
    assert not (out / "valid").exists() and not (out / "audio" / "valid").exists()  # the old export is replaced

    (data / "attribution.csv").unlink()
    with pytest.raises(ConfigError, match="attribution.csv"):
        run_export(ExportConfig(data=str(data), out=str(tmp_path / "other")))


def test_export_yaml_composes_into_the_schema() -> None:
    from tunekit.config.compose import field_docs, load_config

    cfg = load_config("export", ["format=hf", "out=b", "split=valid"], ExportConfig)
    assert cfg.format == "hf" and cfg.out == "b" and cfg.split == "valid" and cfg.shard_mb == 500 and cfg.data is None
    docs = field_docs(ExportConfig)
    assert set(docs) == {f for f in ExportConfig.__dataclass_fields__}
