"""Duplicate removal keeps a usable copy: the keeper is chosen among the copies that passed the licence and
quality checks (then lossless, higher rate, more provenance, path), and a rejected copy never makes another
copy a duplicate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_prep_helpers import music, prep_config, read_table, sidecar, write

from tunekit.prep.dedupe import keeper_order, mark_duplicates
from tunekit.prep.registry import ORDER
from tunekit.prep.rows import OK, Rejection, TrackRow

SECONDS = 4.0
R = 44100


def _unlicensed(path: Path) -> None:
    sidecar(path, None)


def build_corpus(root: Path) -> None:
    """Seven recordings, each held by two files (pN/a.*, pN/b.*), one scenario per recording."""
    import soxr

    def pair(n: int, rate: int = R) -> tuple:
        return music(SECONDS, rate, seed=300 + n), rate

    # p1: the licensed copy comes first by path; p2: second. The other copy has no licence.
    audio, rate = pair(1)
    sidecar(write(root / "p1/a.wav", audio, rate, "PCM_16"), "CC-BY-4.0")
    _unlicensed(write(root / "p1/b.wav", audio, rate, "PCM_16"))
    audio, rate = pair(2)
    _unlicensed(write(root / "p2/a.wav", audio, rate, "PCM_16"))
    sidecar(write(root / "p2/b.wav", audio, rate, "PCM_16"), "CC-BY-4.0")
    # p3: neither copy is usable under the `open` policy: no licence, and NoDerivatives.
    audio, rate = pair(3)
    _unlicensed(write(root / "p3/a.wav", audio, rate, "PCM_16"))
    sidecar(write(root / "p3/b.wav", audio, rate, "PCM_16"), "CC-BY-ND-4.0")
    # p4: both licensed; the first by path is sampled at 16 kHz and fails the quality check.
    audio, rate = pair(4)
    low = soxr.resample(audio.T, R, 16000).T.copy()
    sidecar(write(root / "p4/a_16k.wav", low, 16000, "PCM_16"), "CC-BY-4.0")
    sidecar(write(root / "p4/b.wav", audio, rate, "PCM_16"), "CC-BY-4.0")
    # p5: a lossy copy first by path, a lossless one second.
    audio, rate = pair(5)
    sidecar(write(root / "p5/a.ogg", audio, rate), "CC0-1.0")
    sidecar(write(root / "p5/b.flac", audio, rate, "PCM_16"), "CC0-1.0")
    # p6: 44.1 kHz first by path, the 48 kHz original second.
    audio, rate = pair(6, 48000)
    sidecar(write(root / "p6/a.wav", soxr.resample(audio.T, 48000, R).T.copy(), R, "PCM_16"), "CC0-1.0")
    sidecar(write(root / "p6/b.wav", audio, rate, "PCM_16"), "CC0-1.0")
    # p7: the same bytes; the second file's metadata says more about where it comes from.
    audio, rate = pair(7)
    write(root / "p7/a.wav", audio, rate, "PCM_16")
    shutil.copy(root / "p7/a.wav", root / "p7/b.wav")
    (root / "p7/a.json").write_text(json.dumps({"license": "CC-BY-4.0"}))
    (root / "p7/b.json").write_text(json.dumps({
        "license": "CC-BY-4.0", "artist": "A", "title": "T", "url": "https://example.org/t/7", "source": "label",
    }))


def _config(corpus: Path, out: Path, **overrides):
    return prep_config(corpus, out, quality__min_seconds=2.0, window__seconds=SECONDS, window__min_seconds=1.0,
                       **overrides)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from tunekit.prep.run import run_prep

    base = tmp_path_factory.mktemp("dedupe")
    corpus, out = base / "corpus", base / "out"
    build_corpus(corpus)
    assert run_prep(_config(corpus, out)) == 0
    return corpus, out, {r["source_path"]: r for r in read_table(out / "tracks.parquet")}


def _kept_over(tracks: dict, kept: str, dropped: str) -> str:
    """Assert `kept` is kept and `dropped` rejected as its duplicate; returns the rejection detail."""
    k, d = tracks[kept], tracks[dropped]
    assert k["status"] == "ok", (kept, k["reason"], k["reason_detail"])
    assert d["reason"] == f"duplicate_of:{k['track_id']}", (dropped, d["reason"], d["reason_detail"])
    assert d["failed_stage"] == "dedupe" and kept in d["reason_detail"]
    return d["reason_detail"]


@pytest.mark.integration
def test_the_licensed_copy_is_kept_whichever_comes_first(prepared):
    _, _, tracks = prepared
    for licensed, unlicensed in (("p1/a.wav", "p1/b.wav"), ("p2/b.wav", "p2/a.wav")):
        assert tracks[licensed]["status"] == "ok", (licensed, tracks[licensed]["reason_detail"])
        assert tracks[licensed]["license"] == "CC-BY-4.0"
        assert tracks[unlicensed]["reason"] == "license_unknown", (unlicensed, tracks[unlicensed]["reason"])


@pytest.mark.integration
def test_when_no_copy_is_usable_each_keeps_its_own_reason(prepared):
    _, _, tracks = prepared
    assert tracks["p3/a.wav"]["reason"] == "license_unknown"
    assert tracks["p3/b.wav"]["reason"] == "license_not_allowed:by-nd"


@pytest.mark.integration
def test_a_copy_that_fails_quality_does_not_hide_the_good_one(prepared):
    _, _, tracks = prepared
    low = tracks["p4/a_16k.wav"]
    assert low["status"] == "rejected" and low["failed_stage"] == "quality", (low["reason"], low["reason_detail"])
    assert tracks["p4/b.wav"]["status"] == "ok", tracks["p4/b.wav"]["reason"]


@pytest.mark.integration
def test_the_keeper_is_lossless_then_higher_rate_then_richer_metadata(prepared):
    _, out, tracks = prepared
    assert "lossless" in _kept_over(tracks, "p5/b.flac", "p5/a.ogg")
    assert "higher sample rate, 48000 Hz" in _kept_over(tracks, "p6/b.wav", "p6/a.wav")
    assert "more provenance metadata" in _kept_over(tracks, "p7/b.wav", "p7/a.wav")
    assert "same bytes" in tracks["p7/a.wav"]["reason_detail"]
    kept = {r["track_id"] for r in tracks.values() if r["status"] == "ok"}
    assert {w["track_id"] for w in read_table(out / "windows.parquet")} == kept
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stages"]["dedupe"]["rejected"] == summary["rejects_by_stage"]["dedupe"] == 3
    assert summary["counts"]["ok"] == len(kept) == 6


@pytest.mark.integration
def test_resume_and_a_policy_change_revisit_the_choice(prepared, tmp_path):
    """A re-run answers from the cache with the same tables; with license_policy=any the NoDerivatives copy
    becomes usable and is kept (the unlicensed copy still never counts)."""
    from tunekit.prep.run import run_prep

    corpus, out, tracks = prepared
    before = (out / "tracks.parquet").read_bytes()
    run_prep(_config(corpus, out))
    assert (out / "tracks.parquet").read_bytes() == before
    stats = json.loads((out / "summary.json").read_text())["stages"]
    assert all(stats[s]["computed"] == 0 for s in ("decode", "quality", "loudness")), stats
    run_prep(_config(corpus, out, license_policy="any"))
    again = {r["source_path"]: r for r in read_table(out / "tracks.parquet")}
    assert again["p3/b.wav"]["status"] == "ok" and again["p3/a.wav"]["reason"] == "license_unknown"
    assert {p: r["status"] for p, r in again.items() if not p.startswith("p3/")} == {
        p: r["status"] for p, r in tracks.items() if not p.startswith("p3/")
    }


def _row(path: str, **fields) -> TrackRow:
    base = {"content_hash": "h", "fingerprint": None, "duration_s": 10.0, "lossy": False, "sample_rate_in": 44100,
            "license": "CC0-1.0"}
    return TrackRow(f"trk_{path}", path, **{**base, **fields})


def test_dedupe_runs_after_the_licence_and_quality_verdicts():
    assert ORDER.index("license") < ORDER.index("quality") < ORDER.index("dedupe") < ORDER.index("separate")


def test_keeper_order_prefers_lossless_rate_provenance_then_path():
    rows = [
        _row("a", lossy=True, sample_rate_in=96000, artist="x", title="y"),
        _row("b", sample_rate_in=44100, artist="x", title="y"),
        _row("c", sample_rate_in=48000),
        _row("d", sample_rate_in=48000, artist="x"),
        _row("e", sample_rate_in=48000, artist="x"),
    ]
    assert [r.source_path for r in sorted(rows, key=keeper_order)] == ["d", "e", "c", "b", "a"]


def test_a_rejected_copy_never_makes_another_a_duplicate():
    from tunekit.prep.config import IngestConfig

    unlicensed = _row("a").rejected(Rejection("license_unknown", "no licence"), "license")
    rows = mark_duplicates([unlicensed, _row("b"), _row("c", license=None)], IngestConfig(), None)
    assert rows[0].reason == "license_unknown"
    assert rows[1].status == OK and rows[2].reason == "duplicate_of:trk_b"  # b has more provenance than c
