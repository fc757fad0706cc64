"""The prep engine end to end: caching on re-runs, partial recomputation, kill -9 and resume,
parallel = serial, and clear errors for unusable configs and mismatched outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_prep_helpers import kill_once_cached, music, prep_config, sidecar, write

from tunekit.errors import ConfigError, ConfigErrors, RunFailedError
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


@pytest.fixture(autouse=True)
def one_blas_thread():
    """One BLAS thread in this process, as in every prep process: `tunekit prep` and the pool's workers set it
    before numpy loads (here numpy is already loaded). OpenBLAS splits a matrix product differently for another
    thread count, which changes the last bits of the true peak, and the outputs are compared byte for byte."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


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


def _temporaries(out: Path) -> list[Path]:
    return [p for p in out.rglob(".*") if ".tmp" in p.name]


def as_parquet_dataset(files: Path, root: Path) -> Path:
    """The audio files of `files` (with their sidecar licences) as a Hugging Face dataset: one Parquet shard with
    an Audio column of the files' bytes and a license column."""
    from datasets import Audio, Dataset

    rows = [{"audio": {"bytes": f.read_bytes(), "path": f.name},
             "license": json.loads(f.with_suffix(".json").read_text())["license"], "title": f.stem}
            for f in sorted(files.glob("*.wav"))]
    (root / "data").mkdir(parents=True)
    shard = root / "data" / "train-00000-of-00001.parquet"
    Dataset.from_list(rows).cast_column("audio", Audio()).to_parquet(str(shard))
    return root


@pytest.mark.parametrize("source", ["files", "dataset"])
def test_kill_9_then_rerun_gives_the_uninterrupted_result(tmp_path, source):
    corpus = make_corpus(tmp_path / "corpus", 5, 12.0, seed=200)
    if source == "dataset":
        corpus = as_parquet_dataset(corpus, tmp_path / "dataset")
    reference = tmp_path / "reference"
    run_prep(prep_config(corpus, reference))

    out = tmp_path / "killed"
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    done_before = kill_once_cached([sys.executable, str(driver), str(corpus), str(out)], out, "loudness", 180)
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


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def test_a_stage_failing_for_every_window_fails_the_run_and_the_rerun_resumes(tmp_path, monkeypatch):
    """Every window failing in the tokens stage: the run exits non-zero naming the stage, the count and
    the first error; the summary and the tables say failed (not ok); after the fix, the same command
    resumes with only the failed stage to compute."""
    from test_prep_helpers import read_table

    import tunekit.prep.tokens as tokens
    from tunekit.prep.config import CORE_STAGES

    corpus = make_corpus(tmp_path / "corpus", 2, 11.0, seed=500)
    out = tmp_path / "out"
    cfg = prep_config(corpus, out, stages=[*CORE_STAGES, "tokens"], tokens__device="cpu")
    cfg.models.tiny = True

    def broken(*args, **kwargs):
        raise RuntimeError("simulated codec failure")

    monkeypatch.setattr(tokens, "encode_windows", broken)
    with pytest.raises(RunFailedError) as err:
        run_prep(cfg)
    message = str(err.value)
    first = "first error: RuntimeError: simulated codec failure"
    assert f"stage tokens failed for 2 of 2 windows (all of them); {first}" in message
    assert "no usable training window" in message and str(out / "prep.log") in message
    summary = _summary(out)
    assert summary["status"] == "failed" and len(summary["problems"]) == 2, summary["problems"]
    c = summary["counts"]
    assert (c["tracks"], c["ok"], c["failed"], c["windows"]) == (2, 0, 2, 0), c
    assert summary["stages"]["tokens"]["failed"] == 2
    assert "simulated codec failure" in summary["stages"]["tokens"]["first_error"]
    tracks = read_table(out / "tracks.parquet")
    verdicts = {(t["status"], t["failed_stage"], t["reason"]) for t in tracks}
    assert verdicts == {("failed", "tokens", "error:RuntimeError")}

    monkeypatch.undo()
    assert run_prep(cfg) == 0
    stats = stage_counts(out)
    for name in ("decode", "quality", "loudness", "window"):
        assert stats[name]["computed"] == 0 and stats[name]["cached"] == 2, (name, stats[name])
    assert (stats["tokens"]["computed"], stats["tokens"]["failed"]) == (2, 0)
    summary = _summary(out)
    assert (summary["status"], summary["problems"]) == ("ok", [])
    assert (summary["counts"]["ok"], summary["counts"]["windows"]) == (2, 2)
    assert all(w["tokens_path"] for w in read_table(out / "windows.parquet"))


def test_a_stage_failing_for_more_than_max_failed_fraction_fails_the_run(tmp_path, monkeypatch):
    import tunekit.prep.quality as quality

    corpus = make_corpus(tmp_path / "corpus", 3, 11.0, seed=600)
    real = quality.check_quality

    def flaky(row, cfg, ctx):
        if row.source_path != "t00.wav":
            raise RuntimeError(f"simulated analysis bug in {row.source_path}")
        return real(row, cfg, ctx)

    monkeypatch.setattr(quality, "check_quality", flaky)
    expected = (
        r"stage quality failed for 2 of 3 tracks \(more than max_failed_fraction=0\.5\); "
        r"first error: RuntimeError: simulated analysis bug in t0[12]\.wav"
    )
    with pytest.raises(RunFailedError, match=expected):
        run_prep(prep_config(corpus, tmp_path / "strict"))
    assert _summary(tmp_path / "strict")["status"] == "failed"

    assert run_prep(prep_config(corpus, tmp_path / "lenient", max_failed_fraction=0.7)) == 0
    summary = _summary(tmp_path / "lenient")
    assert (summary["status"], summary["counts"]["ok"], summary["counts"]["failed"]) == ("ok", 1, 2)
    assert summary["stages"]["quality"]["failed"] == 2


def test_a_run_without_a_usable_window_exits_non_zero(tmp_path):
    """Nothing to train on is a failure even when no stage raised: exit code 1, one clear last line."""
    from tunekit.prep.config import CORE_STAGES

    corpus = make_corpus(tmp_path / "corpus", 2, 11.0, seed=700)
    out = tmp_path / "out"
    res = subprocess.run(
        [sys.executable, "-m", "tunekit", "prep", f"corpus={corpus}", f"out={out}", "workers=1", "quiet=true",
         f"stages=[{','.join(CORE_STAGES)}]", "quality.min_seconds=60"],
        capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 1, res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("tunekit: error: prep failed: no usable training window: of 2 tracks 0 are ok"), last
    assert "2 rejected and 0 failed" in last, last
    assert "too_short in quality: 2" in last and "Traceback" not in res.stderr
    summary = _summary(out)
    assert summary["status"] == "failed" and summary["problems"][0].startswith("no usable training window")


def test_values_the_models_do_not_accept_stop_the_run_before_any_work(tmp_path):
    """A codec bandwidth the codec lacks and a segment longer than Demucs was trained on are found in the
    model files before the first stage runs, and reported together."""
    from tunekit.prep.config import CORE_STAGES
    from tunekit.prep.registry import ORDER

    corpus = make_corpus(tmp_path / "corpus", 1, 11.0)
    out = tmp_path / "out"
    stages = [s for s in ORDER if s in {*CORE_STAGES, "separate", "tokens"}]
    cfg = prep_config(corpus, out, stages=stages, tokens__bandwidth=1.0, separate__segment_seconds=30.0)
    cfg.models.tiny = True
    with pytest.raises(ConfigErrors) as err:
        run_prep(cfg)
    problems = err.value.problems
    assert len(problems) == 2, problems
    assert problems[0].startswith("separate.segment_seconds=30.0 is longer than the 7.80 s"), problems
    assert problems[1].startswith("tokens.bandwidth=1.0 is not one of the bandwidths") and "[2.2]" in problems[1]
    assert not (out / ".cache" / "stages" / "ingest").exists() and not (out / "tracks.parquet").exists()



@pytest.mark.parametrize("workers", [1, 2])
def test_what_a_stage_logs_in_a_worker_reaches_the_driver_once(tmp_path, workers):
    """Worker processes have no prep.log: the records a stage logs travel back with its outcomes and the driver
    logs them, once each, whether the stage ran in this process (workers=1) or in the pool."""
    from test_prep_helpers import run_noted_stage

    from tunekit.prep.executors import LocalExecutor, SerialExecutor

    executor = SerialExecutor() if workers == 1 else LocalExecutor(workers, max_chunk=1)
    try:
        pids = run_noted_stage(executor, tmp_path)
    finally:
        executor.close()
    assert (pids == {os.getpid()}) if workers == 1 else (os.getpid() not in pids), pids
