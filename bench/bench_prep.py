"""Throughput of each prep stage (x real time), parallel speed-up and re-run cost on the demo corpus.

    python bench/bench_prep.py                         # synthesises the demo corpus into a temp dir
    python bench/bench_prep.py --corpus data/demo --workers 1 2 4
    python bench/bench_prep.py --long-minutes 30       # adds one 30 min track: peak memory stays flat

For each worker count, runs `tunekit prep` from scratch into a fresh folder and reads the per-stage
wall time and audio seconds from summary.json; then re-runs the same command (everything cached) and
once more with `window.seconds=20` (only windows recomputed). Prints markdown tables. Peak memory is
the largest resident set of the serial run (workers=1), which does all the work in one process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STAGES = ("ingest", "license", "decode", "quality", "loudness", "window", "split")


def synth_corpus(root: Path, n_tracks: int, seed: int) -> Path:
    """Render the demo corpus with tunekit.corpus.synth."""
    from tunekit.corpus.synth import SynthConfig, synthesize

    t0 = time.perf_counter()
    synthesize(SynthConfig(out=str(root), seed=seed, n_tracks=n_tracks, quiet=True))
    print(f"synthesised {n_tracks} demo tracks in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return root


def add_long_track(corpus: Path, minutes: float) -> None:
    """One long stereo track written block by block (never held whole in memory), licensed CC0."""
    import numpy as np
    import soundfile as sf

    rate = 44100
    path = corpus / "long" / f"long_{minutes:g}min.flac"
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    with sf.SoundFile(str(path), "w", rate, 2, subtype="PCM_16") as f:
        for _ in range(int(minutes * 6)):  # 10 s blocks
            t = np.arange(10 * rate) / rate
            tone = 0.2 * np.sin(2 * np.pi * rng.uniform(100, 1000) * t)
            noise = 0.05 * rng.standard_normal((2, t.size))
            f.write((tone + noise).T.astype(np.float32))
    path.with_suffix(".json").write_text(json.dumps({"license": "CC0-1.0", "title": path.stem}))


RUNNER = """
import json, sys
from tunekit.prep.config import CORE_STAGES, PrepConfig
from tunekit.prep.run import run_prep

if __name__ == "__main__":
    cfg = PrepConfig(corpus=sys.argv[1], out=sys.argv[2], workers=int(sys.argv[3]), quiet=True,
                     stages=list(CORE_STAGES))
    for key, value in json.loads(sys.argv[4]).items():
        section, _, name = key.partition("__")
        setattr(getattr(cfg, section), name, value) if name else setattr(cfg, section, value)
    sys.exit(run_prep(cfg))
"""


def run(corpus: Path, out: Path, workers: int, **overrides: object) -> tuple[dict, float]:
    """One prep run in a fresh process; returns (summary, wall seconds measured inside the run)."""
    cmd = [sys.executable, "-c", RUNNER, str(corpus), str(out), str(workers), json.dumps(overrides)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    summary = json.loads((out / "summary.json").read_text())
    return summary, float(summary["wall_s"])


def children_peak_rss_mb() -> float:
    """Largest resident set among finished child processes so far (MB)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, help="an existing corpus (default: synthesise the demo corpus)")
    parser.add_argument("--n-tracks", type=int, default=12, help="demo tracks to synthesise")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--long-minutes", type=float, default=0.0, help="add one long track of this many minutes")
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="tunekit-bench-prep-"))
    try:
        corpus = args.corpus or synth_corpus(tmp / "corpus", args.n_tracks, args.seed)
        if args.long_minutes:
            if args.corpus:
                raise SystemExit("--long-minutes writes into the corpus; use it with a synthesised corpus")
            add_long_track(corpus, args.long_minutes)
        results = {}
        peak = None
        for w in args.workers:
            summary, wall = run(corpus, tmp / f"out{w}", w)
            results[w] = (summary, wall)
            if w == 1 and peak is None:
                peak = children_peak_rss_mb()  # the serial run is the only child so far
        base_w = args.workers[0]
        summary, _ = results[base_w]
        print(
            f"\n## prep on {summary['counts']['tracks']} files, {summary['hours']['input'] * 3600:.0f} s of audio "
            f"({summary['counts']['ok']} kept, {summary['counts']['windows']} windows)\n"
        )
        load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
        print(
            f"{platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores available, "
            f"load average {load} (1/5/15 min) after the runs, Python {platform.python_version()}\n"
        )
        head = "| stage | audio s |" + "".join(f" workers={w}: wall s | x real time |" for w in args.workers)
        if len(args.workers) > 1:
            head += " speed-up |"
        print(head)
        print("|" + "---|" * (head.count("|") - 1))
        for stage in STAGES:
            s0 = results[base_w][0]["stages"][stage]
            cells = [stage, f"{s0['audio_s']:.0f}"]
            for w in args.workers:
                s = results[w][0]["stages"][stage]
                xr = s.get("x_realtime")
                cells += [f"{s['wall_s']:.2f}", "-" if xr is None else f"{xr:.1f}"]
            if len(args.workers) > 1:
                last = results[args.workers[-1]][0]["stages"][stage]
                cells.append(f"{s0['wall_s'] / last['wall_s']:.2f}x" if last["wall_s"] > 0.05 else "-")
            print("| " + " | ".join(cells) + " |")
        total = ["**total run**", f"{summary['hours']['input'] * 3600:.0f}"]
        for w in args.workers:
            total += [f"{results[w][1]:.1f}", f"{summary['hours']['input'] * 3600 / results[w][1]:.1f}"]
        if len(args.workers) > 1:
            total.append(f"{results[base_w][1] / results[args.workers[-1]][1]:.2f}x")
        print("| " + " | ".join(total) + " |")

        w = args.workers[-1]
        _, again = run(corpus, tmp / f"out{w}", w)
        resumed, rewin = run(corpus, tmp / f"out{w}", w, window__seconds=20.0)
        recomputed = [s for s in STAGES if resumed["stages"][s]["computed"]]
        starts = ", ".join(f"workers={w}: {results[w][0].get('workers_start_s', 0):.2f} s" for w in args.workers)
        print(f"\nstarting the worker processes (not in the stage times above): {starts}")
        print(f"re-run, same command (workers={w}): {again:.2f} s (first run {results[w][1]:.1f} s)")
        print(f"re-run with window.seconds=20: {rewin:.2f} s; stages recomputed: {', '.join(recomputed)}")
        if peak is not None:
            print(f"peak resident memory of the serial (workers=1) run: {peak:.0f} MB")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
