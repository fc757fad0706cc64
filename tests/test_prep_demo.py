"""Prep on the synthetic demo corpus, checked against the corpus' own ground truth (ground_truth.csv)."""

from __future__ import annotations

import csv
import json

import pytest
from test_prep_helpers import prep_config, read_table

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from tunekit.corpus.synth import SynthConfig, synthesize
    from tunekit.prep.run import run_prep

    base = tmp_path_factory.mktemp("prep_demo")
    corpus, out = base / "corpus", base / "out"
    synthesize(SynthConfig(out=str(corpus), seed=0, n_tracks=8, min_seconds=10.0, max_seconds=14.0, quiet=True))
    run_prep(prep_config(corpus, out, workers=2))
    truth = {r["path"]: r for r in csv.DictReader((corpus / "ground_truth.csv").open(encoding="utf-8"))}
    tracks = {r["source_path"]: r for r in read_table(out / "tracks.parquet")}
    return out, truth, tracks


def test_every_demo_file_is_read_with_its_format_and_licence(demo):
    _, truth, tracks = demo
    assert sorted(tracks) == sorted(truth)
    for path, t in truth.items():
        row = tracks[path]
        assert row["sample_rate_in"] == int(t["sample_rate"]) and row["channels_in"] == int(t["channels"]), path
        assert row["duration_s"] == pytest.approx(float(t["duration_s"]), abs=0.1), path
        assert row["license"] == (t["license_spdx"] or None), (path, row["license_raw"])
        if not t["license_spdx"]:
            assert row["reason"] == "license_unknown"
        elif t["metadata"] == "both":  # metadata.csv names CC BY-ND: license_prefer=strict refuses the track
            assert row["reason"] == "license_conflict", (path, row["reason"])
            assert row["license_conflict"] == f"sidecar: {t['license_spdx']}; csv: CC-BY-ND-4.0"
        elif "-ND-" in t["license_spdx"]:
            assert row["reason"] == "license_not_allowed:by-nd"
        else:
            assert row["status"] == "ok", (path, row["reason"], row["reason_detail"])


def test_demo_loudness_and_summary(demo):
    from tunekit.audio.loudness import reference_meter_ffmpeg

    out, truth, tracks = demo
    kept = [r for r in tracks.values() if r["status"] == "ok"]
    for r in kept:
        ref = reference_meter_ffmpeg(out / r["audio_path"])
        target = r["lufs_out"] if r["loudness_capped"] else -14.0
        assert abs(ref["integrated_lufs"] - target) <= 0.3, (r["source_path"], ref)
        assert ref["true_peak_dbtp"] <= -0.9, (r["source_path"], ref)
        assert r["lufs_in"] == pytest.approx(float(truth[r["source_path"]]["loudness_lufs"]), abs=0.5)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["ok"] == len(kept) and summary["counts"]["failed"] == 0
    assert sum(summary["licenses"]["kept"].values()) == len(kept)
    windows = read_table(out / "windows.parquet")
    assert {w["track_id"] for w in windows} == {r["track_id"] for r in kept}
