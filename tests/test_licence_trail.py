"""One licence trail: a licence has one name in tracks.parquet, windows.parquet, summary.json and the model
card, and a sidecar/metadata.csv disagreement is recorded and decided by `license_prefer`."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest
from test_prep_helpers import music, prep_config, read_table, sidecar, write

from tunekit.corpus.license import normalize_license
from tunekit.prep.licensing import check_license
from tunekit.prep.rows import Rejection, StageContext, TrackRow

SECONDS = 4.0
SIDECARS = {
    "sa.wav": "Attribution-ShareAlike",  # no version
    "nc.wav": "CC-BY-NC-4.0",
    "agree.wav": "https://creativecommons.org/licenses/by/4.0/",
    "zero.wav": "CC0-1.0",
    "conflict.wav": "Attribution-NonCommercial-ShareAlike 4.0 International",
    "other.wav": "Free Art License 1.3",
}
TABLE = {"by.wav": "CC BY 4.0", "agree.wav": "CC-BY-4.0", "conflict.wav": "CC-BY-ND-4.0"}
CONFLICT = "sidecar: CC-BY-NC-SA-4.0; csv: CC-BY-ND-4.0"


def build_corpus(root: Path) -> Path:
    names = sorted(set(SIDECARS) | set(TABLE))
    for i, name in enumerate(names):
        path = write(root / name, music(SECONDS, 44100, seed=500 + i), 44100, "PCM_16")
        if name in SIDECARS:
            sidecar(path, SIDECARS[name])
    with open(root / "metadata.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "license"])
        writer.writerows(sorted(TABLE.items()))
    return root


def _config(corpus: Path, out: Path, stages: list[str] | None = None, **overrides):
    from tunekit.prep.config import CORE_STAGES

    cfg = prep_config(corpus, out, stages=stages or list(CORE_STAGES), quality__min_seconds=2.0,
                      window__seconds=SECONDS, window__min_seconds=1.0, **overrides)
    cfg.models.tiny = True
    return cfg


@pytest.fixture(scope="module")
def trail(tmp_path_factory):
    """The corpus prepared to tokens (tiny codec, template captions) under the default open/strict settings."""
    from tunekit.prep.config import CORE_STAGES
    from tunekit.prep.run import run_prep

    base = tmp_path_factory.mktemp("trail")
    corpus = build_corpus(base / "corpus")
    out = base / "out"
    assert run_prep(_config(corpus, out, stages=[*CORE_STAGES, "caption", "tokens"])) == 0
    tracks = {r["source_path"]: r for r in read_table(out / "tracks.parquet")}
    return corpus, out, tracks, json.loads((out / "summary.json").read_text())


@pytest.mark.integration
def test_one_name_in_tracks_windows_summary_and_model_card(trail, tmp_path):
    from _train_fixtures import train_cfg

    from tunekit.data.tokens import TokenSet
    from tunekit.train.export import data_card, model_card

    _, out, tracks, summary = trail
    assert tracks["sa.wav"]["license"] == "CC-BY-SA" and tracks["sa.wav"]["license_family"] == "by-sa"
    assert tracks["by.wav"]["license"] == tracks["agree.wav"]["license"] == "CC-BY-4.0"
    assert tracks["other.wav"]["license"] == "LicenseRef-Free-Art-License-1.3"
    assert tracks["other.wav"]["reason"] == "license_not_allowed:other"
    kept = {p: r for p, r in tracks.items() if r["status"] == "ok"}
    assert sorted(kept) == ["agree.wav", "by.wav", "nc.wav", "sa.wav", "zero.wav"]
    by_id = {r["track_id"]: r for r in kept.values()}
    for w in read_table(out / "windows.parquet"):
        assert w["license"] == by_id[w["track_id"]]["license"]
    assert summary["licenses"]["kept"] == dict(Counter(r["license"] for r in kept.values()))
    assert summary["licenses"]["all"]["LicenseRef-Free-Art-License-1.3"] == 1
    assert summary["licenses"]["share_alike"]["licenses"] == ["CC-BY-SA"]

    tokens = TokenSet(out)
    data = data_card(tokens, tokens.indices("train"), tokens.indices("valid"))
    splits = {r["track_id"]: r["split"] for r in kept.values()}
    trained = Counter(r["license"] for r in kept.values() if r["split"] == "train")
    held_out = Counter(r["license"] for r in kept.values() if r["split"] in ("valid", "test"))
    assert data["licences"] == dict(trained) and data["eval_licences"] == dict(held_out)
    assert sorted(data["eval_track_ids"]) == sorted(t for t, s in splits.items() if s != "train")
    card = model_card(tmp_path / "run", cfg=train_cfg(out, tmp_path / "run"), base="facebook/musicgen-small",
                      base_path="unused", trainable=1, total=2, data=data, metrics={}, attribution=[])
    trained_line = next(line for line in card.splitlines() if line.startswith("- licences of the training tracks"))
    eval_line = next(line for line in card.splitlines() if line.startswith("- evaluation only"))
    for name, n in trained.items():
        assert f"{name} ({n} track" in trained_line, (name, trained_line)
    for name, n in held_out.items():
        assert f"{name} ({n} track" in eval_line, (name, eval_line)
    assert "unknown" not in trained_line + eval_line


@pytest.mark.integration
def test_a_sidecar_csv_conflict_is_recorded_and_rejected_under_open(trail):
    _, _, tracks, summary = trail
    row = tracks["conflict.wav"]
    assert (row["status"], row["reason"], row["failed_stage"]) == ("rejected", "license_conflict", "license")
    assert row["license_conflict"] == CONFLICT and row["license"] == "CC-BY-NC-SA-4.0"
    assert "CC-BY-ND-4.0" in row["reason_detail"] and "license_prefer" in row["reason_detail"]
    assert tracks["agree.wav"]["license_conflict"] is None and tracks["agree.wav"]["status"] == "ok"
    assert summary["licenses"]["conflicts"] == {"tracks": 1, "kept": 0, "rejected": 1}
    assert summary["licenses"]["prefer"] == "strict"


@pytest.mark.integration
def test_license_prefer_chooses_the_source(trail, tmp_path):
    from tunekit.prep.run import run_prep

    corpus, _, _, _ = trail
    run_prep(_config(corpus, tmp_path / "sidecar", license_prefer="sidecar"))
    row = {r["source_path"]: r for r in read_table(tmp_path / "sidecar" / "tracks.parquet")}["conflict.wav"]
    assert row["status"] == "ok", (row["reason"], row["reason_detail"])
    assert (row["license"], row["license_source"], row["license_conflict"]) == ("CC-BY-NC-SA-4.0", "sidecar", CONFLICT)
    run_prep(_config(corpus, tmp_path / "csv", license_prefer="csv"))
    row = {r["source_path"]: r for r in read_table(tmp_path / "csv" / "tracks.parquet")}["conflict.wav"]
    assert row["reason"] == "license_not_allowed:by-nd"
    assert (row["license"], row["license_raw"], row["license_source"]) == ("CC-BY-ND-4.0", "CC-BY-ND-4.0", "csv")
    assert row["license_conflict"] == CONFLICT


def _conflicted(sidecar_licence: str, csv_licence: str) -> TrackRow:
    info = normalize_license(sidecar_licence)
    return TrackRow("t", "t.wav", license=info.id, license_raw=sidecar_licence, license_family=info.family,
                    license_source="sidecar", license_conflict="sidecar vs csv",
                    license_candidates={"sidecar": sidecar_licence, "csv": csv_licence})


@pytest.mark.parametrize("sidecar_licence,csv_licence,policy,prefer,expected", [
    ("CC-BY-NC-SA-4.0", "CC-BY-ND-4.0", "open", "strict", "license_conflict"),
    ("CC-BY-ND-4.0", "CC-BY-NC-SA-4.0", "open", "strict", "license_conflict"),  # either value refused
    ("CC-BY-4.0", "CC-BY-NC-4.0", "commercial", "strict", "license_conflict"),
    ("CC-BY-4.0", "CC-BY-NC-4.0", "open", "strict", "CC-BY-4.0"),  # both admitted: the sidecar's is kept
    ("CC-BY-NC-SA-4.0", "CC-BY-ND-4.0", "any", "strict", "CC-BY-NC-SA-4.0"),
    ("CC-BY-NC-SA-4.0", "CC-BY-ND-4.0", "open", "sidecar", "CC-BY-NC-SA-4.0"),
    ("CC-BY-NC-SA-4.0", "CC-BY-ND-4.0", "open", "csv", "license_not_allowed:by-nd"),
    ("CC-BY-ND-4.0", "CC-BY-4.0", "open", "csv", "CC-BY-4.0"),
    ("CC-BY-4.0", "CC-BY-NC-4.0", "commercial", "sidecar", "CC-BY-4.0"),
])
def test_licence_stage_decides_a_conflict(sidecar_licence, csv_licence, policy, prefer, expected):
    section = {"license_policy": policy, "allow_unknown_license": False, "license_prefer": prefer}
    out = check_license(_conflicted(sidecar_licence, csv_licence), section, StageContext("/", "/", "/"))
    if isinstance(out, Rejection):
        assert out.reason == expected, (out.reason, out.detail)
        if prefer == "csv":  # the rejected row records the licence that was judged
            assert out.update["license"] == normalize_license(csv_licence).id and out.update["license_source"] == "csv"
    else:
        assert out.license == expected, out
        assert out.license_source == ("csv" if prefer == "csv" else "sidecar")
        assert out.license_conflict == "sidecar vs csv"  # still recorded


def test_license_prefer_is_validated_with_its_key():
    from tunekit.prep.config import PrepConfig

    problems = PrepConfig.problems(PrepConfig(license_prefer="newest"))
    assert any(p.startswith("license_prefer=") and "strict" in p for p in problems), problems
