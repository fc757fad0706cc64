"""Hugging Face datasets as a prep corpus: the round trip through `tunekit export format=hf`, datasets built
with `datasets` (bytes, paths, a missing licence, bad rows), save_to_disk folders, hf:// from an offline cache,
column mapping and its errors, streaming memory and resuming the audio it writes."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_prep_helpers import music, prep_config, read_table, sidecar, write

from tunekit.errors import ConfigError, ConfigErrors
from tunekit.prep.config import SourceConfig
from tunekit.prep.hf_source import open_dataset, resolve_corpus, scan_dataset, sniff_extension
from tunekit.prep.run import path_problems, run_prep

RATE = 44100
SHORT = {"window__seconds": 4.0, "window__min_seconds": 2.0, "quality__min_seconds": 2.0}


def flac_bytes(audio: np.ndarray, rate: int = RATE, subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio.T, rate, format="FLAC", subtype=subtype)
    return buf.getvalue()


def decoded(data: bytes | Path) -> np.ndarray:
    audio, _ = sf.read(io.BytesIO(data) if isinstance(data, bytes) else str(data), dtype="float32", always_2d=True)
    return audio


def by(rows: list[dict], key: str) -> dict:
    return {r[key]: r for r in rows}


def credits(out: Path) -> dict[str, str]:
    with open(out / "attribution.csv", encoding="utf-8", newline="") as f:
        return {r["track_id"]: r["credit"] for r in csv.DictReader(f)}


@pytest.fixture(autouse=True)
def one_blas_thread():
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


# -- the round trip: prep -> export format=hf -> prep ----------------------------------------------------------


@pytest.mark.integration
def test_exported_dataset_preps_back_to_the_same_windows(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from tunekit.export.config import ExportConfig
    from tunekit.export.run import run_export

    corpus = tmp_path / "corpus"
    licences = [("CC-BY-4.0", "Sound by Ann (https://example.org/ann)"), ("CC0-1.0", None),
                ("https://creativecommons.org/licenses/by-sa/4.0/", None)]
    for i, (lic, credit) in enumerate(licences):
        path = write(corpus / f"song{i}.wav", music(8.0, RATE, seed=300 + i), RATE, "PCM_16")
        sidecar(path, lic, attribution=credit, url=f"https://example.org/{i}", source="demo", source_id=f"s{i}")
    first = tmp_path / "first"
    run_prep(prep_config(corpus, first, **SHORT))
    export = tmp_path / "export"
    assert run_export(ExportConfig(format="hf", data=str(first), out=str(export))) == 0

    # What was exported, read with pyarrow alone.
    exported = [r for p in sorted((export / "data").glob("*.parquet")) for r in pq.read_table(p).to_pylist()]
    windows = read_table(first / "windows.parquet")
    assert len(exported) == len(windows) == 6

    again = tmp_path / "again"
    run_prep(prep_config(export, again, **SHORT))
    tracks = read_table(again / "tracks.parquet")
    assert len(tracks) == len(exported)
    assert all(t["status"] == "ok" for t in tracks), [(t["source_path"], t["reason"]) for t in tracks]
    root = again / ".cache"
    first_tracks, first_credits, again_credits = by(read_table(first / "tracks.parquet"), "track_id"), credits(first), \
        credits(again)  # fmt: skip
    mismatch = []
    for track in tracks:
        row = by(exported, "window_id")[track["hf_row_id"]]
        original = first_tracks[row["track_id"]]
        for name in ("license", "attribution", "artist", "title", "url", "source", "source_id"):
            assert track[name] == row[name] == original[name], (name, track[name], row[name], original[name])
        assert track["hf_split"] == row["split"] and track["license_source"] == "hf_column:license"
        assert track["content_hash"] == hashlib.sha256(row["audio"]["bytes"]).hexdigest()
        assert again_credits.get(track["track_id"]) == first_credits.get(original["track_id"])
        # The audio: the file the stages read decodes to the samples of the first prep's stored track.
        w = by(windows, "window_id")[row["window_id"]]
        stored = decoded(first / w["audio_path"])[w["offset_frames"] : w["offset_frames"] + w["frames"]]
        source = next(root.glob(f"sources/*/{track['source_path']}"))
        got = decoded(source)
        if got.shape != stored.shape or not np.array_equal(got, stored):
            mismatch.append((track["hf_row_id"], got.shape, stored.shape, float(np.abs(got - stored).max())))
        assert track["duration_s"] == w["frames"] / RATE
    assert not mismatch, f"{len(mismatch)} windows decode differently: {mismatch[:3]}"
    # Every credit the first prep asked for is asked for again, once per window of the track.
    assert sorted(again_credits.values()) == sorted(
        first_credits[w["track_id"]] for w in windows if w["track_id"] in first_credits
    )


# -- a dataset built with `datasets` ---------------------------------------------------------------------------


def _mixed_dataset(tmp_path: Path) -> tuple[Path, list[np.ndarray]]:
    """Parquet written by `datasets`: 3 good rows as bytes, 1 as a path, 1 good row without a licence, and
    bad rows: bytes that are not audio, no audio at all, 0 bytes, a path to nothing."""
    from datasets import Audio, Dataset

    audio = [music(6.0, RATE, seed=400 + i) for i in range(5)]
    external = write(tmp_path / "external" / "x.wav", audio[3], RATE, "PCM_16")
    moved = write(tmp_path / "gone" / "missing.wav", audio[3], RATE, "PCM_16")  # deleted once the dataset is written
    rows = [{"audio": {"bytes": flac_bytes(audio[i]), "path": f"a{i}.flac"}, "license": "CC-BY-4.0"} for i in range(3)]
    rows += [
        {"audio": {"bytes": None, "path": str(external)}, "license": "CC0-1.0"},
        {"audio": {"bytes": flac_bytes(audio[4]), "path": None}, "license": None},
        {"audio": {"bytes": b"this is not audio", "path": "bad.mp3"}, "license": "CC0-1.0"},
        {"audio": None, "license": "CC0-1.0"},
        {"audio": {"bytes": b"", "path": None}, "license": "CC0-1.0"},
        {"audio": {"bytes": None, "path": str(moved)}, "license": "CC0-1.0"},
    ]
    for i, r in enumerate(rows):
        r.update(artist=f"Artist {i}", title=f"Song {i}", id=f"row-{i}", lyrics="la la\nla" if i == 0 else None)
    ds = Dataset.from_list(rows).cast_column("audio", Audio())
    root = tmp_path / "mixed"
    ds.to_parquet(str(root / "data" / "train-00000-of-00001.parquet"))
    moved.unlink()
    return root, audio


@pytest.mark.integration
def test_every_row_of_a_datasets_parquet_gets_a_status_and_a_reason(tmp_path: Path) -> None:
    root, audio = _mixed_dataset(tmp_path)
    out = tmp_path / "out"
    run_prep(prep_config(root, out, **SHORT, source__paths_outside=True))  # row 3 names a file outside the dataset
    tracks = by(read_table(out / "tracks.parquet"), "hf_row_id")
    assert sorted(tracks) == [f"row-{i}" for i in range(9)]
    expected = {0: ("ok", None), 1: ("ok", None), 2: ("ok", None), 3: ("ok", None), 4: ("rejected", "license_unknown"),
                5: ("rejected", "unreadable"), 6: ("rejected", "no_audio"), 7: ("rejected", "empty"),
                8: ("rejected", "unreadable")}  # fmt: skip
    got = {i: (tracks[f"row-{i}"]["status"], tracks[f"row-{i}"]["reason"]) for i in range(9)}
    assert got == expected
    for i, t in ((i, tracks[f"row-{i}"]) for i in range(9)):
        assert t["hf_row"] == i and t["hf_split"] == "train" and t["hf_dataset"] == str(root)
        assert t["hf_shard"] == "data/train-00000-of-00001.parquet" and t["artist"] == f"Artist {i}"
        assert t["status"] == "ok" or t["reason_detail"], t
    assert "missing.wav" in tracks["row-8"]["reason_detail"]
    assert "license" in tracks["row-4"]["metadata_problems"][0]
    # Nothing good is lost: each good row's audio is the audio the stages decoded, at full length.
    cache = out / ".cache"
    for i in range(4):
        t = tracks[f"row-{i}"]
        assert t["duration_s"] == audio[i].shape[1] / RATE and t["license"] in ("CC-BY-4.0", "CC0-1.0")
        source = next(cache.glob(f"sources/*/{t['source_path']}"))
        ref = decoded(flac_bytes(audio[i])) if i < 3 else decoded(write(tmp_path / "ref.wav", audio[i], RATE, "PCM_16"))
        np.testing.assert_array_equal(decoded(source), ref)
    assert tracks["row-3"]["content_hash"] == hashlib.sha256((tmp_path / "external" / "x.wav").read_bytes()).hexdigest()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["ok"] == 4 and summary["counts"]["rejected"] == 5
    windows = read_table(out / "windows.parquet")
    assert {w["track_id"] for w in windows} == {tracks[f"row-{i}"]["track_id"] for i in range(4)}

    # A re-run writes no audio and gives the same tables.
    before = (out / "tracks.parquet").read_bytes()
    store = sorted(p for p in (cache / "sources").rglob("*") if p.is_file() or p.is_symlink())
    mtimes = {p: p.lstat().st_mtime_ns for p in store}
    half_written = [cache / "sources" / "audio" / ".0123.tmp.flac", store[0].parent / ".00000009.flac.4242.tmp"]
    half_written[0].write_bytes(b"fLaC")  # what a killed scan leaves: a file and a link not yet renamed
    half_written[1].symlink_to(tmp_path / "nowhere.flac")
    run_prep(prep_config(root, out, **SHORT, source__paths_outside=True))
    assert (out / "tracks.parquet").read_bytes() == before
    assert {p: p.lstat().st_mtime_ns for p in store} == mtimes
    assert not [p for p in half_written if p.is_symlink() or p.exists()], half_written
    stats = json.loads((out / "summary.json").read_text())["stages"]
    assert all(stats[s]["computed"] == 0 for s in ("ingest", "decode", "loudness")), stats


def test_lyrics_reach_the_metadata_the_acestep_stage_reads(tmp_path: Path) -> None:
    from tunekit.corpus.metadata import load_corpus_metadata
    from tunekit.prep.lyrics import track_lyrics

    root, _ = _mixed_dataset(tmp_path)
    rows, report = scan_dataset(open_dataset(root, SourceConfig()), tmp_path / "cache")
    first = Path(report.root) / rows[0].source_path
    meta = load_corpus_metadata(Path(report.root), read_embedded_tags=False).for_track(first)
    assert track_lyrics(first, Path(report.root), meta, instrumental=False).text == "la la\nla"
    assert not (Path(report.root) / rows[1].source_path).with_suffix(".json").exists()


# -- save_to_disk, the dataset card, splits ----------------------------------------------------------------------


def test_save_to_disk_splits_fingerprints_and_the_card_licence(tmp_path: Path) -> None:
    from datasets import Audio, Dataset, DatasetDict, DatasetInfo

    def split(seed: int, n: int) -> Dataset:
        rows = [{"audio": {"bytes": flac_bytes(music(1.0, RATE, seed=seed + i)), "path": None}, "credit": f"c{i}"}
                for i in range(n)]  # fmt: skip
        return Dataset.from_list(rows, info=DatasetInfo(license="cc-by-sa-4.0")).cast_column("audio", Audio())

    root = tmp_path / "saved"
    DatasetDict({"train": split(500, 3), "test": split(600, 2)}).save_to_disk(str(root))
    cfg = SourceConfig()
    ds = open_dataset(root, cfg)
    assert ds is not None and ds.format == "arrow" and list(ds.shards) == ["train", "test"] and ds.rows == 5
    assert ds.card_license == "cc-by-sa-4.0" and ds.columns == {"audio": "audio", "attribution": "credit"}
    rows, _ = scan_dataset(ds, tmp_path / "cache")
    fingerprints = {s: json.loads((root / s / "state.json").read_text())["_fingerprint"] for s in ("train", "test")}
    assert [(r.extra["hf_split"], r.extra["hf_row"]) for r in rows] == [("train", 0), ("train", 1), ("train", 2),
                                                                       ("test", 0), ("test", 1)]  # fmt: skip
    assert [r.extra["hf_revision"] for r in rows] == [fingerprints["train"]] * 3 + [fingerprints["test"]] * 2
    assert all(r.license is None and "license_from_card=true" in r.metadata_problems[0] for r in rows)
    assert [r.attribution for r in rows] == ["c0", "c1", "c2", "c0", "c1"]

    cfg.license_from_card, cfg.splits = True, ["test"]
    rows, _ = scan_dataset(open_dataset(root, cfg), tmp_path / "cache")
    assert [r.extra["hf_split"] for r in rows] == ["test", "test"]
    assert {(r.license, r.license_source, r.share_alike) for r in rows} == {("CC-BY-SA-4.0", "hf_card", True)}


def test_card_declared_splits_and_a_git_checkout_revision(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path / "repo"
    (root / "shards").mkdir(parents=True)
    for name, n in (("a", 2), ("b", 1)):
        table = pa.table({"wav": [flac_bytes(music(1.0, RATE, seed=700 + i)) for i in range(n)],
                          "Licence": ["CC0-1.0"] * n, "Track_Title": [f"{name}{i}" for i in range(n)]})  # fmt: skip
        pq.write_table(table, root / "shards" / f"{name}.parquet")
    card = """---
license: other
license_link: https://creativecommons.org/licenses/by/4.0/
configs:
- config_name: default
  data_files:
  - split: dev
    path: shards/a*
  - split: holdout
    path: shards/b.parquet
---
# card
"""
    (root / "README.md").write_text(card)
    (root / ".git" / "refs" / "heads").mkdir(parents=True)
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (root / ".git" / "refs" / "heads" / "main").write_text("0123456789abcdef0123456789abcdef01234567\n")
    ds = open_dataset(root, SourceConfig())
    assert ds.shards == {"dev": [root / "shards" / "a.parquet"], "holdout": [root / "shards" / "b.parquet"]}
    assert ds.columns == {"audio": "wav", "license": "Licence", "title": "Track_Title"} and ds.audio_kind == "bytes"
    assert ds.card_license == "https://creativecommons.org/licenses/by/4.0/"
    rows, _ = scan_dataset(ds, tmp_path / "cache")
    assert [(r.title, r.extra["hf_split"], r.license_source) for r in rows] == [
        ("a0", "dev", "hf_column:Licence"), ("a1", "dev", "hf_column:Licence"), ("b0", "holdout", "hf_column:Licence")]
    assert {r.extra["hf_revision"] for r in rows} == {"0123456789abcdef0123456789abcdef01234567"}


# -- hf://org/name[@revision] ------------------------------------------------------------------------------------


def test_hub_dataset_resolves_offline_from_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from huggingface_hub import constants

    commit = "a" * 40
    repo = tmp_path / "hub" / "datasets--someone--cc-music"
    snapshot = repo / "snapshots" / commit
    (snapshot / "data").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    pq.write_table(pa.table({"audio": [flac_bytes(music(1.0, RATE, seed=800))], "license": ["CC-BY-4.0"]}),
                   snapshot / "data" / "train-00000-of-00001.parquet")  # fmt: skip
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for spec in ("hf://someone/cc-music", f"hf://someone/cc-music@{commit}", "hf://datasets/someone/cc-music"):
        assert resolve_corpus(spec) == snapshot.resolve()
    rows, _ = scan_dataset(open_dataset(resolve_corpus("hf://someone/cc-music"), SourceConfig()), tmp_path / "c")
    assert (rows[0].extra["hf_dataset"], rows[0].extra["hf_revision"]) == ("someone/cc-music", commit)
    assert rows[0].source == "hf:someone/cc-music" and rows[0].license == "CC-BY-4.0"
    with pytest.raises(ConfigError, match="HF_HUB_OFFLINE") as err:
        resolve_corpus("hf://someone/not-cached@v2")
    assert err.value.key == "corpus"
    problems = path_problems(prep_config("hf://a/b/c", tmp_path / "o"))
    assert len(problems) == 1 and problems[0].startswith("corpus=hf://a/b/c is not a Hub dataset name")
    assert path_problems(prep_config("hf://someone/cc-music@main", tmp_path / "o")) == []


# -- column mapping and its errors -------------------------------------------------------------------------------


def test_column_errors_name_the_key_to_change(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path / "ds"
    root.mkdir()
    pq.write_table(pa.table({"clip": [b"x"], "n": [1.0], "lic": ["CC0-1.0"]}), root / "train.parquet")
    # Parquet without audio is no dataset corpus under source.kind=auto (a prep output or a table kept beside the
    # audio files); named as a dataset, it is refused with the keys to change.
    assert open_dataset(root, SourceConfig()) is None
    with pytest.raises(ConfigErrors) as err:
        open_dataset(root, SourceConfig(kind="dataset"))
    assert err.value.problems == ["the dataset has no audio column (columns: clip, n, lic); "
                                  "set source.columns.audio=<column> (or source.kind=files for a folder of audio "
                                  "files)"]  # fmt: skip
    cfg = SourceConfig(splits=["validation"])
    cfg.columns.audio, cfg.columns.license, cfg.columns.title = "n", "licence", "lic"
    with pytest.raises(ConfigErrors) as err:
        open_dataset(root, cfg)
    text = " | ".join(err.value.problems)
    assert "source.splits: the dataset has no split validation (splits: train)" in text
    assert "source.columns.license=licence: the dataset has no such column" in text
    assert "source.columns.audio=n: a double column holds no audio" in text
    cfg = SourceConfig()
    cfg.columns.audio, cfg.columns.license = "clip", ""
    ds = open_dataset(root, cfg)
    assert ds.columns == {"audio": "clip"} and "no licence column" in ds.problems[0]
    assert open_dataset(root, SourceConfig(kind="files")) is None
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="source.kind"):
        open_dataset(tmp_path / "empty", SourceConfig(kind="dataset"))
    assert SourceConfig(kind="hub").problems("source") == [
        "source.kind='hub' is unknown; choose one of auto, files, dataset"]
    # A folder of audio files (and the prep output inside it) stays a folder of audio files.
    write(tmp_path / "music" / "a.wav", music(1.0, RATE), RATE)
    (tmp_path / "music" / "out").mkdir()
    pq.write_table(pa.table({"x": [1]}), tmp_path / "music" / "out" / "tracks.parquet")
    assert open_dataset(tmp_path / "music", SourceConfig(), exclude=[tmp_path / "music" / "out"]) is None


def test_audio_bytes_are_named_by_what_they_hold() -> None:
    x = music(0.5, RATE)
    for fmt, ext in (("WAV", "wav"), ("FLAC", "flac"), ("OGG", "ogg"), ("AIFF", "aiff")):
        buf = io.BytesIO()
        sf.write(buf, x.T, RATE, format=fmt)
        assert sniff_extension(buf.getvalue()[:64], "clip.mp3") == ext
    assert sniff_extension(b"ID3\x04\x00" + bytes(59)) == "mp3"
    assert sniff_extension(b"\x00\x00\x00\x20ftypM4A " + bytes(52)) == "m4a"
    assert sniff_extension(b"junk", "take.opus") == "opus" and sniff_extension(b"junk") == "bin"


# -- streaming and resuming --------------------------------------------------------------------------------------


def test_streaming_memory_is_one_row_group_and_an_interrupted_scan_resumes(tmp_path: Path) -> None:
    """12 row groups of 4 rows x 256 KiB: pyarrow holds one row group at a time, whatever the
    dataset's size, and a scan whose writes were cut short writes exactly what is missing."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    blob = 256 * 1024
    payloads = [rng.bytes(blob) for _ in range(48)]  # distinct, incompressible
    root = tmp_path / "big"
    root.mkdir()
    pq.write_table(pa.table({"audio": payloads, "license": ["CC0-1.0"] * 48}), root / "train.parquet",
                   row_group_size=4, compression="none")  # fmt: skip
    group = 4 * blob
    assert pq.ParquetFile(root / "train.parquet").metadata.num_row_groups == 12

    class Probe:
        peak = 0
        writes: list[str] = []

        def start_stage(self, name, total, audio_s):
            assert total == 48

        def advance(self, name, audio_s, outcome, rejected=False):
            Probe.peak = max(Probe.peak, pa.total_allocated_bytes())
            Probe.writes.append(outcome)

        def end_stage(self, stats):
            Probe.stats = stats

    base = pa.total_allocated_bytes()
    ds = open_dataset(root, SourceConfig())
    rows, report = scan_dataset(ds, tmp_path / "cache", Probe())
    held = Probe.peak - base
    assert held < 1.5 * group, f"pyarrow held {held} bytes; one row group is {group}, the dataset {48 * group // 4}"
    assert Probe.writes == ["computed"] * 48 and Probe.stats.computed == 48
    for row, data in zip(rows, payloads, strict=True):
        assert (Path(report.root) / row.source_path).read_bytes() == data

    # Interrupted: a third of the links and stored files never written, plus a half-written temporary file.
    store = tmp_path / "cache" / "sources" / "audio"
    for row in rows[::3]:
        link = Path(report.root) / row.source_path
        os.unlink(link.resolve())
        link.unlink()
    (store / ".partial.tmp.wav").write_bytes(b"RIFF")
    Probe.writes = []
    again, _ = scan_dataset(ds, tmp_path / "cache", Probe())
    assert Probe.writes.count("computed") == 16 and Probe.stats.cached == 32
    assert [r.source_path for r in again] == [r.source_path for r in rows]
    for row, data in zip(again, payloads, strict=True):
        assert (Path(report.root) / row.source_path).read_bytes() == data


def test_on_ray_the_dataset_folder_is_checked_as_shared_storage(tmp_path: Path) -> None:
    """Rows that give their audio by path link into the dataset's folder, so Ray's start-up check covers it."""
    pytest.importorskip("ray")
    from tunekit.prep.config import PrepConfig
    from tunekit.prep.run import shared_paths

    cfg = PrepConfig(corpus=str(tmp_path / "ds"), out=str(tmp_path / "out"))
    cfg.models.tiny = True
    found = shared_paths(cfg, tmp_path / "out/.cache/sources/ds-1", tmp_path / "out", tmp_path / "out/.cache", [],
                         dataset=tmp_path / "ds")
    assert [(p.key, p.path) for p in found[:3]] == [
        ("corpus", str(tmp_path / "out/.cache/sources/ds-1")), ("corpus", str(tmp_path / "ds")),
        ("out", str(tmp_path / "out"))]


def test_a_rescan_of_unchanged_shards_reads_no_audio_and_a_changed_shard_is_read_again(tmp_path: Path,
                                                                                        monkeypatch) -> None:
    """Each fully scanned shard leaves an index of its rows: a re-run with the shard, settings and files unchanged
    gives the same rows without reading the shard; a shard rewritten, or a row's stored audio gone, is read again."""
    import dataclasses

    import tunekit.prep.hf_source as hf

    root, _ = _mixed_dataset(tmp_path)
    ds = open_dataset(root, SourceConfig())
    first, _ = scan_dataset(ds, tmp_path / "cache")
    read: list[Path] = []
    real = hf._batches

    def counting(path, fmt, columns):
        read.append(path)
        return real(path, fmt, columns)

    monkeypatch.setattr(hf, "_batches", counting)
    again, report = scan_dataset(open_dataset(root, SourceConfig()), tmp_path / "cache")
    assert read == [] and [dataclasses.asdict(r) for r in again] == [dataclasses.asdict(r) for r in first]

    kept = next(r for r in first if r.status == "ok")
    (Path(report.root) / kept.source_path).resolve().unlink()  # its stored audio removed
    assert [dataclasses.asdict(r) for r in scan_dataset(open_dataset(root, SourceConfig()), tmp_path / "cache")[0]] \
        == [dataclasses.asdict(r) for r in first]
    assert len(read) == 1 and (Path(report.root) / kept.source_path).exists()

    shard = ds.shards["train"][0]
    os.utime(shard, ns=(shard.stat().st_atime_ns, shard.stat().st_mtime_ns + 10**9))  # the shard rewritten
    scan_dataset(open_dataset(root, SourceConfig()), tmp_path / "cache")
    assert len(read) == 2


def test_audio_paths_stay_inside_the_dataset_unless_allowed(tmp_path: Path) -> None:
    """A row's audio path that leaves the dataset's folder (`..`, an absolute path elsewhere) is refused with the key
    to set, so a downloaded dataset cannot make any local file a track; a path through a Hub-style blob link keeps
    the extension it was written with; a path that named no file is looked up again on the next scan."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    private = write(tmp_path / "private.wav", music(3.0, RATE, seed=1), RATE, "PCM_16")
    root = tmp_path / "ds"
    blob = write(tmp_path / "blobs" / "a.flac", music(3.0, RATE, seed=2), RATE, "PCM_16")
    blob = blob.rename(blob.with_name("0f3a"))
    (root / "clips").mkdir(parents=True)
    (root / "clips" / "a.flac").symlink_to(blob)  # as a Hub snapshot holds its files
    paths = ["clips/a.flac", "../private.wav", str(private), "clips/later.wav"]
    pq.write_table(pa.table({"audio": paths, "license": ["CC0-1.0"] * 4}), root / "train.parquet")
    rows, _ = scan_dataset(open_dataset(root, SourceConfig()), tmp_path / "cache")
    got = [(r.status, r.reason, r.source_path) for r in rows]
    assert got == [("ok", None, "train/00000000.flac"), ("rejected", "path_outside", "train/00000001"),
                   ("rejected", "path_outside", "train/00000002"), ("rejected", "unreadable", "train/00000003")], got
    assert "source.paths_outside=true" in rows[1].reason_detail
    allowed = SourceConfig(paths_outside=True)
    rows, _ = scan_dataset(open_dataset(root, allowed), tmp_path / "cache2")
    assert [r.status for r in rows] == ["ok", "ok", "ok", "rejected"]
    write(root / "clips" / "later.wav", music(3.0, RATE, seed=3), RATE, "PCM_16")
    rows, _ = scan_dataset(open_dataset(root, allowed), tmp_path / "cache2")
    assert [r.status for r in rows] == ["ok"] * 4
