"""The prep engine end to end: caching on re-runs, partial recomputation, kill -9 and resume,
parallel = serial, and clear errors for unusable configs and mismatched outputs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_prep_helpers import music, prep_config, sidecar, write

from tunekit.errors import ConfigError
from tunekit.prep.run import run_prep

pytestmark = pytest.mark.integration

OUTPUTS = ("tracks.parquet", "windows.parquet", "ATTRIBUTION.md", "attribution.csv")


def make_corpus(root: Path, n: int, seconds: float, seed: int = 100) -> Path:
    for i in range(n):
        path = write(root / f"t{i:02d}.wav", music(seconds, 44100, seed=seed + i), 44100, "PCM_16")
        sidecar(path, "CC-BY-4.0" if i % 2 else "CC0-1.0")
    return root


def stage_counts(out: Path) -> dict[str, dict]:
    return json.loads((out / "summary.json").read_text())["stages"]


def snapshot(out: Path) -> dict[str, bytes]:
    """Every output whose bytes must be reproducible: tables, credits and the stored audio."""
    files = {name: (out / name).read_bytes() for name in OUTPUTS}
    files.update({f"audio/{p.name}": p.read_bytes() for p in sorted((out / "audio").iterdir())})
    return files


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    base = tmp_path_factory.mktemp("prep_engine")
    return make_corpus(base / "corpus", 4, 12.0)


def test_rerun_does_no_work_and_rewrites_identical_outputs(small, tmp_path):
    out = tmp_path / "out"
    run_prep(prep_config(small, out))
    first = snapshot(out)
    mtimes = {p.name: p.stat().st_mtime_ns for p in (out / "audio").iterdir()}
    run_prep(prep_config(small, out))
    stats = stage_counts(out)
    for name in ("ingest", "decode", "quality", "loudness", "window"):
        assert stats[name]["computed"] == 0 and stats[name]["cached"] == 4, (name, stats[name])
    assert snapshot(out) == first
    assert {p.name: p.stat().st_mtime_ns for p in (out / "audio").iterdir()} == mtimes


def test_changed_parameters_recompute_only_what_depends_on_them(small, tmp_path):
    out = tmp_path / "out"
    run_prep(prep_config(small, out))
    run_prep(prep_config(small, out, window__seconds=5.0, window__min_seconds=3.0))
    stats = stage_counts(out)
    assert stats["window"]["computed"] == 4
    assert all(stats[s]["computed"] == 0 for s in ("ingest", "decode", "quality", "loudness"))
    from test_prep_helpers import read_table

    windows = read_table(out / "windows.parquet")
    assert len(windows) == 4 * 2 and {w["duration_s"] for w in windows} == {5.0}  # 12 s: 2 full, 2 s dropped
    run_prep(prep_config(small, out, window__seconds=5.0, window__min_seconds=3.0, loudness__target_lufs=-16.0))
    stats = stage_counts(out)
    assert stats["loudness"]["computed"] == 4 and stats["window"]["computed"] == 4
    assert stats["decode"]["computed"] == 0 and stats["quality"]["computed"] == 0
    tracks = read_table(out / "tracks.parquet")
    assert all(abs(t["lufs_out"] + 16.0) < 0.05 or t["loudness_capped"] for t in tracks)


DRIVER = """
import sys
from tunekit.prep.config import CORE_STAGES, PrepConfig
from tunekit.prep.run import run_prep

if __name__ == "__main__":
    sys.exit(run_prep(PrepConfig(corpus=sys.argv[1], out=sys.argv[2], workers=2, quiet=True, stages=CORE_STAGES)))
"""


def _entries(out: Path, stage: str) -> int:
    """Complete cache entries of a stage (a write in progress is a hidden temporary file)."""
    root = out / ".cache" / "stages" / stage
    return sum(1 for p in root.rglob("*.json") if not p.name.startswith(".")) if root.is_dir() else 0


def _temporaries(out: Path) -> list[Path]:
    return [p for p in out.rglob(".*") if ".tmp" in p.name]


def test_kill_9_then_rerun_gives_the_uninterrupted_result(tmp_path):
    corpus = make_corpus(tmp_path / "corpus", 5, 12.0, seed=200)
    reference = tmp_path / "reference"
    run_prep(prep_config(corpus, reference))

    out = tmp_path / "killed"
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    proc = subprocess.Popen(
        [sys.executable, str(driver), str(corpus), str(out)],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 180
        while _entries(out, "loudness") < 1 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "the run finished before it could be interrupted"
        os.killpg(proc.pid, signal.SIGKILL)  # the driver, its fork server and its workers
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not (out / "tracks.parquet").exists()
    done_before = _entries(out, "loudness")
    assert 1 <= done_before < 5
    planted = out / ".cache" / "stages" / "loudness" / "00" / ".0000.k3x9.tmp.json"  # as a kill mid-write leaves
    planted.parent.mkdir(parents=True, exist_ok=True)
    planted.write_text('{"stage": "loud')

    run_prep(prep_config(corpus, out, workers=2))
    stats = stage_counts(out)
    assert stats["decode"]["cached"] >= 1 and stats["loudness"]["cached"] >= 1
    assert stats["loudness"]["computed"] == 5 - stats["loudness"]["cached"]
    assert snapshot(out) == snapshot(reference)  # parallel resumed run == serial uninterrupted run
    assert not any(p.name.startswith(".") for p in (out / "audio").iterdir())  # no temp files left
    assert _temporaries(out) == []  # nor half-written cache entries


def test_unusable_configs_fail_before_work_with_the_key_named(tmp_path):
    with pytest.raises(ConfigError) as exc:
        run_prep(prep_config(tmp_path / "missing", tmp_path / "out"))
    assert "corpus=" in str(exc.value) and exc.value.exit_code == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no audio here")
    with pytest.raises(ConfigError) as exc:
        run_prep(prep_config(empty, tmp_path / "out"))
    assert "contains no audio" in str(exc.value) and exc.value.key == "corpus"
    corpus = make_corpus(tmp_path / "c", 1, 11.0)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError) as exc:
        run_prep(prep_config(corpus, blocker))
    assert "out=" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        run_prep(prep_config(corpus, tmp_path / "out", stages=["ingest", "license", "decode", "mix"]))
    assert "'mix'" in str(exc.value) and "stages" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        run_prep(prep_config(corpus, tmp_path / "out", window__align="bars", license_policy="free"))
    assert "window.align" in str(exc.value) and "license_policy" in str(exc.value)
    assert not (tmp_path / "out" / "tracks.parquet").exists()


def test_an_output_made_from_another_corpus_or_format_is_refused(tmp_path):
    a = make_corpus(tmp_path / "a", 1, 11.0, seed=300)
    b = make_corpus(tmp_path / "b", 1, 11.0, seed=301)
    out = tmp_path / "out"
    run_prep(prep_config(a, out))
    with pytest.raises(ConfigError) as exc:
        run_prep(prep_config(b, out))
    assert "corpus" in str(exc.value) and "overwrite=true" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        run_prep(prep_config(a, out, decode__sample_rate=32000))
    assert "32000" in str(exc.value) and "overwrite=true" in str(exc.value)
    run_prep(prep_config(b, out, overwrite=True))
    from test_prep_helpers import read_table

    assert [t["source_path"] for t in read_table(out / "tracks.parquet")] == ["t00.wav"]
    assert len(list((out / "audio").iterdir())) == 1
    other = tmp_path / "not_ours"
    other.mkdir()
    (other / "thesis.pdf").write_text("x")
    with pytest.raises(ConfigError) as exc:
        run_prep(prep_config(a, other))
    assert "not empty" in str(exc.value)


def test_an_error_in_a_stage_fails_one_row_with_its_traceback_logged(tmp_path, monkeypatch):
    from test_prep_helpers import read_table

    import tunekit.prep.quality as quality

    corpus = make_corpus(tmp_path / "corpus", 2, 11.0, seed=400)
    real = quality.check_quality

    def flaky(row, cfg, ctx):
        if row.source_path == "t01.wav":
            raise RuntimeError("simulated analysis bug")
        return real(row, cfg, ctx)

    monkeypatch.setattr(quality, "check_quality", flaky)
    out = tmp_path / "out"
    assert run_prep(prep_config(corpus, out)) == 0  # serial: the patched function runs in this process
    rows = {r["source_path"]: r for r in read_table(out / "tracks.parquet")}
    assert rows["t00.wav"]["status"] == "ok"
    bad = rows["t01.wav"]
    assert (bad["status"], bad["reason"], bad["failed_stage"]) == ("failed", "error:RuntimeError", "quality")
    log = (out / "prep.log").read_text()
    assert "Traceback" in log and "simulated analysis bug" in log and "t01.wav" in log
    assert json.loads((out / "summary.json").read_text())["counts"]["failed"] == 1


def test_a_model_that_cannot_be_found_stops_the_run_before_any_work(tmp_path):
    """The last stage's model is resolved up front: an offline run without its weights fails in seconds,
    naming the fix, instead of after every earlier stage has run."""
    from tunekit.models.hub import WeightsNotFoundError

    corpus = make_corpus(tmp_path / "corpus", 1, 11.0)
    out = tmp_path / "out"
    cfg = prep_config(corpus, out)
    cfg.stages = [*cfg.stages, "tokens"]  # facebook/encodec_32khz, not downloaded (tests run offline)
    with pytest.raises(WeightsNotFoundError, match="models=tiny"):
        run_prep(cfg)
    assert not (out / ".cache" / "stages" / "ingest").exists() and not (out / "tracks.parquet").exists()
