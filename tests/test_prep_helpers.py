"""Generated audio and corpora for the prep tests (imported by the other test_prep_* files)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf


def music(seconds: float, rate: int = 44100, seed: int = 0, channels: int = 2, peak_db: float = -3.0) -> np.ndarray:
    """Broadband, track-like test audio (C, N): plucked harmonic notes every 0.25 s plus noise bursts.

    Different seeds give unrelated note sequences (so fingerprints differ); content reaches well
    above 8 kHz (so the bandwidth check passes).
    """
    rng = np.random.default_rng(seed)
    n = int(round(seconds * rate))
    out = np.zeros((channels, n))
    step = int(0.25 * rate)
    for start in range(0, n, step):
        m = min(step, n - start)
        tt = np.arange(m) / rate
        env = np.exp(-tt * 8.0)
        f0 = 110.0 * 2 ** (rng.integers(0, 30) / 12)
        note = sum(
            np.sin(2 * np.pi * f0 * h * tt + rng.uniform(0, 2 * np.pi)) / h for h in range(1, 14) if f0 * h < rate / 2
        )
        noise = rng.standard_normal((channels, m)) * (0.4 if rng.random() < 0.6 else 0.05)
        for c in range(channels):
            out[c, start : start + m] += env * (note * (1.0 - 0.2 * c) + noise[c])
    out *= 10 ** (peak_db / 20) / np.abs(out).max()
    return out.astype(np.float32)


def write(path: Path, audio: np.ndarray, rate: int, subtype: str | None = None, **kwargs) -> Path:
    """Write (C, N) audio with soundfile (format from the extension)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio.T, rate, subtype=subtype, **kwargs)
    return path


def sidecar(path: Path, license: str | None, **fields) -> None:
    """A sidecar JSON next to an audio file, as tunekit.corpus.metadata reads them."""
    meta = {"artist": "Test Artist", "title": path.stem.replace("_", " ").title(), **fields}
    if license is not None:
        meta["license"] = license
    path.with_suffix(".json").write_text(json.dumps(meta), encoding="utf-8")


def ffmpeg_convert(src: Path, dst: Path, *args: str) -> Path:
    """Re-encode `src` to `dst` with the bundled ffmpeg."""
    import imageio_ffmpeg

    dst.parent.mkdir(parents=True, exist_ok=True)
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-i", str(src), *args, str(dst)]
    subprocess.run(cmd, check=True, capture_output=True)
    return dst


def read_table(path: Path) -> list[dict]:
    """A parquet table as a list of dicts."""
    import pyarrow.parquet as pq

    return pq.read_table(str(path)).to_pylist()


def prep_config(corpus: Path, out: Path, **overrides):
    """A PrepConfig for tests of the engine and its model-free stages: serial, quiet, with dotted
    overrides (`window__seconds=20`)."""
    from tunekit.prep.config import CORE_STAGES, PrepConfig

    cfg = PrepConfig(corpus=str(corpus), out=str(out), workers=1, quiet=True, stages=list(CORE_STAGES))
    for key, value in overrides.items():
        section, _, name = key.partition("__")
        if name:
            setattr(getattr(cfg, section), name, value)
        else:
            setattr(cfg, section, value)
    return cfg



def noted_stage(row, section, ctx):
    """A stage that logs a warning (naming its row and process), an info line through a module's own logger, an
    error with its traceback and a debug line, and titles its row."""
    import dataclasses
    import logging
    import os

    logging.getLogger("tunekit.prep").warning("worker note for %s from pid %d", row.source_path, os.getpid())
    logging.getLogger("tunekit.prep.caption").info("module note for %s", row.source_path)
    try:
        raise ValueError(f"handled for {row.source_path}")
    except ValueError:
        logging.getLogger("tunekit.models.acestep").exception("library error")
    logging.getLogger("tunekit.prep").debug("below the level prep.log keeps")
    return dataclasses.replace(row, title="noted")


def run_noted_stage(executor, tmp_path: Path) -> set[int]:
    """Run `noted_stage` over four rows on `executor` through the engine, with a handler on the `tunekit` logger at
    INFO as `tunekit prep` sets up prep.log; check that each record reached the driver once (the error with its
    traceback) and the debug line did not. Returns the ids of the processes that ran the stage."""
    import logging

    from tunekit.prep.config import PrepConfig
    from tunekit.prep.engine import Engine
    from tunekit.prep.registry import StageSpec
    from tunekit.prep.rows import StageContext, TrackRow

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("tunekit")
    before = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        ctx = StageContext(str(tmp_path), str(tmp_path), str(tmp_path / ".cache"))
        registry = {"noted": StageSpec("noted", "test_prep_helpers:noted_stage", ("window",), cache=False)}
        rows = Engine(PrepConfig(), ctx, lambda: executor, registry=registry).run(
            [TrackRow(f"t{i}", f"t{i}.wav") for i in range(4)], ["noted"])
    finally:
        logger.removeHandler(handler)
        logger.setLevel(before)
    assert [r.title for r in rows] == ["noted"] * 4
    notes = sorted(r.getMessage() for r in records if "worker note" in r.getMessage())
    assert [n.split(" from ")[0] for n in notes] == [f"worker note for t{i}.wav" for i in range(4)], notes
    assert all(r.levelno == logging.WARNING for r in records if "worker note" in r.getMessage())
    modules = sorted(r.getMessage() for r in records if "module note" in r.getMessage())
    assert modules == [f"module note for t{i}.wav" for i in range(4)], modules
    errors = [r for r in records if r.getMessage().startswith("library error")]
    assert len(errors) == 4, errors
    texts = [r.getMessage() + (logging.Formatter().formatException(r.exc_info) if r.exc_info else "") for r in errors]
    assert all("ValueError: handled for t" in t for t in texts), texts
    assert not [r for r in records if "below the level" in r.getMessage()]
    return {int(n.rsplit(" ", 1)[1]) for n in notes}


def cache_entries(out: Path, stage: str) -> int:
    """Complete cache entries of a stage (a write in progress is a hidden temporary file)."""
    root = out / ".cache" / "stages" / stage
    return sum(1 for p in root.rglob("*.json") if not p.name.startswith(".")) if root.is_dir() else 0


def kill_once_cached(argv: list[str], out: Path, stage: str, timeout: float) -> int:
    """Run `argv` (a prep driver) in a process group of its own and SIGKILL the whole group (driver, fork server,
    workers) as soon as `stage` has a finished cache entry in `out`; returns how many it had. Fails when the run
    ended before it could be interrupted."""
    import os
    import signal
    import time

    proc = subprocess.Popen(argv, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout
        while cache_entries(out, stage) < 1 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, "the run finished (or failed) before it could be interrupted"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not (out / "tracks.parquet").exists()
    return cache_entries(out, stage)

def test_music_is_broadband_and_seeded():
    a, b = music(2.0, seed=1), music(2.0, seed=1)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, music(2.0, seed=2))
    spec = np.abs(np.fft.rfft(a[0])) ** 2
    freqs = np.fft.rfftfreq(a.shape[1], 1 / 44100)
    assert 10 * np.log10(spec[freqs > 8000].sum() / spec.sum()) > -40
