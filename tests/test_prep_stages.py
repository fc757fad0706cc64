"""One prep run over a generated corpus with every kind of file the stages must handle.

Good tracks of exact lengths, several formats and channel layouts; one file per rejection reason
(corrupt, empty, no frames, truncated WAV and FLAC, too short, silence, NaN, clipping, low bitrate,
low sample rate, low bandwidth, exact and decoded duplicates, missing and NoDerivatives licences).
Loudness is checked against ffmpeg's ebur128 meter, an independent implementation.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_prep_helpers import ffmpeg_convert, music, prep_config, read_table, sidecar, write

pytestmark = pytest.mark.integration

CC0 = "CC0-1.0"
# source path -> expected rejection code (None: kept)
EXPECTED = {
    "good/a_30s.wav": None,
    "good/b_60s_48k.flac": None,
    "good/c_mono_45s.wav": None,
    "good/d_surround.wav": None,
    "good/e_fma.ogg": None,
    "good/f_aac.m4a": None,
    "good/g_tagged.flac": None,
    "bad/clipped.wav": "clipping",
    "bad/corrupt.wav": "unreadable",
    "bad/empty.wav": "empty",
    "bad/lowbitrate.mp3": "low_bitrate",
    "bad/lowrate.wav": "low_sample_rate",
    "bad/nan.wav": "non_finite",
    "bad/narrow.wav": "low_bandwidth",
    "bad/no_frames.wav": "zero_length",
    "bad/short.wav": "too_short",
    "bad/silence.wav": "silent",
    "bad/truncated.flac": "truncated",
    "bad/truncated.wav": "truncated",
    "lic/by_nd.wav": "license_not_allowed",
    "lic/no_licence.wav": "license_unknown",
    "zdup/a_copy.wav": "duplicate_of",
    "zdup/a_reencoded.flac": "duplicate_of",
}
LICENCES = {
    "good/a_30s.wav": ("CC-BY-4.0", "CC-BY-4.0"),
    "good/b_60s_48k.flac": (CC0, CC0),
    "good/c_mono_45s.wav": ("https://creativecommons.org/licenses/by-sa/4.0/", "CC-BY-SA-4.0"),
    "good/d_surround.wav": (CC0, CC0),
    "good/e_fma.ogg": ("Attribution-NonCommercial-ShareAlike 3.0 International", "CC-BY-NC-SA-3.0"),
    "good/f_aac.m4a": ("http://creativecommons.org/licenses/by-nc/4.0/", "CC-BY-NC-4.0"),
    "good/g_tagged.flac": ("Licensed under CC BY 4.0", "CC-BY-4.0"),
}


def build_corpus(root: Path) -> None:
    r = 44100
    a = music(30.0, r, seed=1)
    write(root / "good/a_30s.wav", a, r, "PCM_24")
    write(root / "good/b_60s_48k.flac", music(60.0, 48000, seed=2), 48000, "PCM_16")
    write(root / "good/c_mono_45s.wav", music(45.0, r, seed=3, channels=1), r, "PCM_16")
    write(root / "good/d_surround.wav", music(10.5, r, seed=4, channels=6), r, "PCM_24")
    write(root / "good/e_fma.ogg", music(10.5, r, seed=5), r)
    tmp = write(root.parent / "f_src.wav", music(10.5, r, seed=6), r, "PCM_16")
    ffmpeg_convert(tmp, root / "good/f_aac.m4a", "-c:a", "aac", "-b:a", "192k")
    for path, (raw, _) in LICENCES.items():
        if path != "good/g_tagged.flac":
            sidecar(root / path, raw)
    # No sidecar, no metadata.csv row: licence, artist and title come from the file's own tags.
    with sf.SoundFile(str(root / "good/g_tagged.flac"), "w", r, 2, subtype="PCM_16") as f:
        f.title, f.artist, f.copyright = "Tagged Tune", "Tag Artist", "Licensed under CC BY 4.0"
        f.write(music(10.5, r, seed=16).T)

    bad = root / "bad"
    bad.mkdir()
    (bad / "corrupt.wav").write_bytes(np.random.default_rng(0).bytes(50_000))
    (bad / "empty.wav").write_bytes(b"")
    write(bad / "no_frames.wav", np.zeros((2, 0), np.float32), r, "PCM_16")
    for ext, subtype in (("wav", "PCM_16"), ("flac", "PCM_24")):
        full = write(root.parent / f"full.{ext}", music(6.0, r, seed=7), r, subtype)
        data = full.read_bytes()
        (bad / f"truncated.{ext}").write_bytes(data[: len(data) // 2])
    write(bad / "short.wav", music(5.0, r, seed=8), r, "PCM_16")
    write(bad / "silence.wav", np.zeros((2, int(10.5 * r)), np.float32), r, "PCM_16")
    nan = music(10.5, r, seed=9)
    nan[0, 1000:1010] = np.nan
    write(bad / "nan.wav", nan, r, "FLOAT")
    write(bad / "clipped.wav", np.clip(music(10.5, r, seed=10) * 8.0, -1, 1), r, "PCM_16")
    write(
        bad / "lowbitrate.mp3",
        music(10.5, r, seed=11),
        r,
        format="MP3",
        bitrate_mode="CONSTANT",
        compression_level=0.99,
    )
    write(bad / "lowrate.wav", music(10.5, 16000, seed=12), 16000, "PCM_16")
    import soxr

    narrow = soxr.resample(soxr.resample(music(10.5, r, seed=13).T, r, 8000), 8000, r).T
    write(bad / "narrow.wav", np.ascontiguousarray(narrow), r, "PCM_16")
    for p in bad.iterdir():
        sidecar(p, CC0)

    write(root / "lic/no_licence.wav", music(10.5, r, seed=14), r, "PCM_16")
    sidecar(root / "lic/no_licence.wav", None)
    write(root / "lic/by_nd.wav", music(10.5, r, seed=15), r, "PCM_16")
    sidecar(root / "lic/by_nd.wav", "CC-BY-ND-4.0")

    (root / "zdup").mkdir()
    shutil.copy(root / "good/a_30s.wav", root / "zdup/a_copy.wav")
    write(root / "zdup/a_reencoded.flac", a, r, "PCM_24")
    for p in ("zdup/a_copy.wav", "zdup/a_reencoded.flac"):
        sidecar(root / p, CC0)
    (root / "notes.txt").write_text("not audio")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from tunekit.prep.run import run_prep

    base = tmp_path_factory.mktemp("prep_stages")
    corpus, out = base / "corpus", base / "out"
    corpus.mkdir()
    build_corpus(corpus)
    assert run_prep(prep_config(corpus, out)) == 0
    tracks = {r["source_path"]: r for r in read_table(out / "tracks.parquet")}
    windows = read_table(out / "windows.parquet")
    summary = json.loads((out / "summary.json").read_text())
    return corpus, out, tracks, windows, summary


def test_every_file_gets_one_row_with_the_expected_verdict(prepared):
    corpus, out, tracks, _, summary = prepared
    assert sorted(tracks) == sorted(EXPECTED)  # notes.txt and sidecars are not audio
    for path, expected in EXPECTED.items():
        row = tracks[path]
        if expected is None:
            assert row["status"] == "ok" and row["reason"] is None, (path, row["reason"], row["reason_detail"])
        else:
            assert row["status"] == "rejected", (path, row["status"], row["reason_detail"])
            assert row["reason"].split(":")[0] == expected, (path, row["reason"], row["reason_detail"])
    a_id = tracks["good/a_30s.wav"]["track_id"]
    assert tracks["zdup/a_copy.wav"]["reason"] == f"duplicate_of:{a_id}"
    assert tracks["zdup/a_reencoded.flac"]["reason"] == f"duplicate_of:{a_id}"
    assert summary["counts"]["other_files_ignored"] >= 1
    assert summary["counts"]["failed"] == 0


def test_licences_are_normalised_and_raw_strings_kept(prepared):
    _, _, tracks, _, summary = prepared
    for path, (raw, spdx) in LICENCES.items():
        assert tracks[path]["license"] == spdx and tracks[path]["license_raw"] == raw
    assert tracks["lic/no_licence.wav"]["license"] is None
    tagged = tracks["good/g_tagged.flac"]
    assert (tagged["artist"], tagged["title"], tagged["license_source"]) == (
        "Tag Artist",
        "Tagged Tune",
        "embedded:copyright",
    )
    assert summary["licenses"]["kept"] == {
        CC0: 2,
        "CC-BY-4.0": 2,
        "CC-BY-SA-4.0": 1,
        "CC-BY-NC-SA-3.0": 1,
        "CC-BY-NC-4.0": 1,
    }
    assert summary["licenses"]["share_alike"]["tracks"] == 2 and summary["licenses"]["share_alike"]["note"]


def test_attribution_credits_exactly_the_tracks_that_need_it(prepared):
    _, out, tracks, _, _ = prepared
    text = (out / "ATTRIBUTION.md").read_text()
    import csv

    rows = list(csv.DictReader((out / "attribution.csv").open()))
    credited = {r["source_path"] for r in rows}
    assert credited == {p for p, (_, spdx) in LICENCES.items() if spdx != CC0}
    for p in credited:
        assert tracks[p]["title"] in text
    assert "B 60S 48K" not in text  # CC0 tracks need no credit


def test_loudness_matches_an_independent_meter(prepared):
    from tunekit.audio.loudness import reference_meter_ffmpeg

    _, out, tracks, _, _ = prepared
    kept = [r for r in tracks.values() if r["status"] == "ok"]
    assert len(kept) == 7
    for r in kept:
        ref = reference_meter_ffmpeg(out / r["audio_path"])
        target = r["lufs_out"] if r["loudness_capped"] else -14.0
        assert abs(ref["integrated_lufs"] - target) <= 0.3, (r["source_path"], ref, r["lufs_out"])
        assert abs(r["lufs_out"] - ref["integrated_lufs"]) <= 0.3
        assert ref["true_peak_dbtp"] <= -1.0 + 0.1, (r["source_path"], ref)
        assert r["gain_db"] == pytest.approx((r["lufs_out"] - r["lufs_in"]), abs=0.05)
        assert r["loudness_policy"] == "cap"


def test_stored_audio_is_24_bit_stereo_at_the_working_rate(prepared):
    _, out, tracks, _, _ = prepared
    for r in tracks.values():
        if r["status"] != "ok":
            assert r["audio_path"] is None or not (out / r["audio_path"]).exists()
            continue
        info = sf.info(str(out / r["audio_path"]))
        assert (info.format, info.subtype, info.samplerate, info.channels) == ("FLAC", "PCM_24", 44100, 2)
    mono, _ = sf.read(str(out / tracks["good/c_mono_45s.wav"]["audio_path"]))
    assert np.array_equal(mono[:, 0], mono[:, 1])  # mono -> dual-mono
    assert sorted(p.name for p in (out / "audio").iterdir()) == sorted(
        Path(r["audio_path"]).name for r in tracks.values() if r["status"] == "ok"
    )


def test_windows_have_exact_lengths_and_share_their_tracks_split(prepared):
    _, out, tracks, windows, _ = prepared
    by_track: dict[str, list[dict]] = {}
    for w in windows:
        by_track.setdefault(w["track_id"], []).append(w)

    def durations(path: str) -> list[float]:
        return [w["duration_s"] for w in by_track[tracks[path]["track_id"]]]

    assert durations("good/a_30s.wav") == [30.0]
    assert durations("good/b_60s_48k.flac") == [30.0, 30.0]  # 60.000 s at 48 kHz -> 2 full windows at 44.1 kHz
    assert durations("good/c_mono_45s.wav") == [30.0, 15.0]
    assert durations("good/d_surround.wav") == [10.5]
    for w in windows:
        t = next(r for r in tracks.values() if r["track_id"] == w["track_id"])
        assert w["split"] == t["split"] and w["license"] == t["license"] and w["audio_path"] == t["audio_path"]
        assert w["offset_frames"] == round(w["offset_s"] * 44100) and w["start_s"] == w["offset_s"]
        n = sf.info(str(out / w["audio_path"])).frames
        assert w["offset_frames"] + w["frames"] <= n
    kept = [r for r in tracks.values() if r["status"] == "ok"]
    assert all(r["split"] in ("train", "valid", "test") for r in kept)
    assert any(r["split"] == "valid" for r in kept)
    assert all(r["split"] is None for r in tracks.values() if r["status"] != "ok")


def test_tracks_table_contract(prepared):
    corpus, _, tracks, _, _ = prepared
    required = [
        "track_id",
        "source_path",
        "status",
        "reason",
        "license",
        "license_raw",
        "artist",
        "title",
        "content_hash",
        "duration_s",
        "sample_rate_in",
        "channels_in",
        "lufs_in",
        "lufs_out",
        "true_peak_in_dbtp",
        "true_peak_dbtp",
        "gain_db",
        "loudness_policy",
        "split",
        "audio_path",
        "attribution",
        "source",
        "source_id",
        "url",
        "genre",
        "tags",
        "instrumental",
        "date_observed",
    ]
    for r in tracks.values():
        assert set(required) <= set(r)
    a = tracks["good/a_30s.wav"]
    assert a["content_hash"] == hashlib.sha256((corpus / "good/a_30s.wav").read_bytes()).hexdigest()
    assert a["sample_rate_in"] == 44100 and a["channels_in"] == 2 and a["duration_s"] == 30.0
    assert tracks["good/d_surround.wav"]["channels_in"] == 6
    assert tracks["good/f_aac.m4a"]["decoder"] == "ffmpeg"
    assert tracks["bad/lowbitrate.mp3"]["bitrate_kbps"] < 40


def test_summary_counts_and_stages(prepared):
    _, out, tracks, windows, summary = prepared
    assert (summary["status"], summary["problems"]) == ("ok", [])
    c = summary["counts"]
    assert c["tracks"] == len(EXPECTED) and c["ok"] == 7 and c["rejected"] == len(EXPECTED) - 7
    assert c["windows"] == len(windows) == 9 and c["windows_full"] == 4 and c["windows_partial"] == 5
    assert summary["rejects_by_reason"]["duplicate_of"] == 2 and summary["rejects_by_reason"]["truncated"] == 2
    assert summary["hours"]["kept"] == pytest.approx((30 + 60 + 45 + 10.5 * 4) / 3600, abs=1e-3)
    for name in ("ingest", "license", "decode", "quality", "loudness", "window", "split"):
        assert name in summary["stages"]
    assert summary["stages"]["decode"]["computed"] >= 7 and summary["stages"]["decode"]["x_realtime"] > 0
    assert summary["config"]["loudness"]["target_lufs"] == -14.0
    assert summary["tunekit_version"]
    assert (out / "prep.log").is_file()


def test_limit_policy_reaches_target_under_the_ceiling(tmp_path):
    """A peaky track: capping leaves it quiet; the limiter reaches the target. ffmpeg checks both."""
    from tunekit.audio.loudness import reference_meter_ffmpeg
    from tunekit.prep.config import LoudnessConfig
    from tunekit.prep.normalize import normalize_track
    from tunekit.prep.rows import StageContext, TrackRow

    rate = 44100
    x = music(6.0, rate, seed=20) * 0.05
    burst = np.random.default_rng(1).standard_normal((2, 441)) * np.exp(-np.arange(441) / 60)
    for start in range(0, x.shape[1] - 441, rate // 2):  # loud 10 ms hits twice a second: high crest factor
        x[:, start : start + 441] += burst * (0.9 / np.abs(burst).max())
    work = write(tmp_path / "work.wav", x, rate, "FLOAT")
    ctx = StageContext(str(tmp_path), str(tmp_path / "out"), str(tmp_path / "cache"), stage="loudness", key="k" * 40)
    row = TrackRow("trk_peaky", "peaky.wav", work_path=str(work))
    capped = normalize_track(row, LoudnessConfig(policy="cap"), ctx)
    ref = reference_meter_ffmpeg(tmp_path / "out" / capped.audio_path)
    assert capped.loudness_capped and capped.lufs_out < -16.0
    assert abs(ref["integrated_lufs"] - capped.lufs_out) <= 0.3 and ref["true_peak_dbtp"] <= -0.9
    limited = normalize_track(row, LoudnessConfig(policy="limit"), ctx)
    ref = reference_meter_ffmpeg(tmp_path / "out" / limited.audio_path)
    assert abs(ref["integrated_lufs"] + 14.0) <= 0.3, ref
    assert ref["true_peak_dbtp"] <= -0.9 and limited.limiter_gain_reduction_db > 1.0
    assert limited.true_peak_dbtp <= -1.0 + 0.02 and abs(limited.lufs_out + 14.0) <= 0.1
