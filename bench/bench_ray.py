"""The Ray executor against the local one: executor start-up, per-item overhead, and each stage with warm workers.

    .venv/bin/python bench/bench_ray.py                      # every part, 2 CPUs (needs pip install 'tunekit[ray]')
    .venv/bin/python bench/bench_ray.py --parts overhead --items 4000
    .venv/bin/python bench/bench_ray.py --parts stages --cpus 4 --corpus data/demo

Parts, each measured in fresh processes:
- startup: `LocalExecutor.start()` (fork server, stage modules imported) against `RayExecutor.start()` on a
  local instance (`ray.init`, the storage check, one warmed worker per CPU).
- overhead: a function that does nothing over `--items` items: the local pool, Ray tasks (prep's chunking and
  one item per task) and a model stage's Ray actors (the actors' start included): ms per item.
- stages: `tunekit prep` from scratch with the local executor (`workers=--cpus`) and with `executor=ray`
  (`executor.num_cpus=--cpus`): wall time and × real time of every stage from summary.json (the executor's
  start-up is reported apart, as the engine does). The non-model stages run on the synthesised demo corpus
  (or `--corpus`); every MusicGen stage on tiny models runs on a short corpus (`--model-tracks` tracks of
  `--model-seconds`), and with `acestep` also every ACE-Step stage (tiny models, the same corpus). Both runs
  must write the same tables, stored audio, tokens and latents (safetensors by content: their header lists the
  metadata in no fixed order): the script says so.

Ray runs with RAY_AUTH_MODE=disabled here (nothing written to ~/.ray). Prints markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CORE = ("ingest", "decode", "quality", "loudness", "window")
MODEL = ("separate", "loudness", "tag", "caption", "tokens")
ACESTEP = ("loudness", "tag", "caption", "latents")

STARTUP = """
import json, sys, time
from tunekit.prep.config import ExecutorConfig
from tunekit.prep.executors import LocalExecutor
from tunekit.prep.ray_executor import RayExecutor
from tunekit.prep.run import worker_preload
from tunekit.prep.config import DEFAULT_STAGES

if __name__ == "__main__":
    kind, cpus = sys.argv[1], int(sys.argv[2])
    preload = worker_preload(list(DEFAULT_STAGES))
    t0 = time.perf_counter()
    if kind == "local":
        ex = LocalExecutor(cpus, preload=preload)
    else:
        ex = RayExecutor(ExecutorConfig(name="ray", num_cpus=cpus), preload=preload)
    ex.start()
    started = time.perf_counter() - t0
    t1 = time.perf_counter()
    ex.close()
    print(json.dumps({"start_s": started, "close_s": time.perf_counter() - t1}))
"""

OVERHEAD = """
import json, sys, time
from tunekit.prep.config import ExecutorConfig
from tunekit.prep.executors import LocalExecutor, TaskGroup
from tunekit.prep.ray_executor import RayExecutor

nothing = abs  # a builtin: picklable for every executor, and does nothing worth timing

if __name__ == "__main__":
    kind, cpus, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    items = list(range(n))
    out = {}
    if kind == "local":
        with LocalExecutor(cpus) as ex:
            ex.start()
            t0 = time.perf_counter(); assert len(dict(ex.imap_unordered(nothing, items))) == n
            out["local pool, chunks of 8"] = time.perf_counter() - t0
    else:
        for label, chunk in (("Ray tasks, chunks of 8", 8), ("Ray tasks, one item each", 1)):
            ex = RayExecutor(ExecutorConfig(name="ray", num_cpus=cpus, chunk_size=chunk))
            ex.start()
            dict(ex.imap_unordered(nothing, items[: 4 * cpus]))  # every worker has run the function once
            t0 = time.perf_counter(); assert len(dict(ex.imap_unordered(nothing, items))) == n
            out[label] = time.perf_counter() - t0
            if chunk == 8:
                group = TaskGroup("tokens", holds_model=True)
                t0 = time.perf_counter(); assert len(dict(ex.imap_unordered(nothing, items, group))) == n
                out["Ray actors, chunks of 8 (actor start included)"] = time.perf_counter() - t0
            ex.close()
    print(json.dumps(out))
"""

RUN = """
import sys
from tunekit.config.compose import load_config
from tunekit.prep.config import PrepConfig
from tunekit.prep.run import run_prep

if __name__ == "__main__":
    sys.exit(run_prep(load_config("prep", sys.argv[1:], PrepConfig)))
"""


def _python(code: str, *args: str) -> str:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-c", code, *args], check=True, capture_output=True, text=True, env=env)
    return res.stdout.strip().splitlines()[-1] if res.stdout.strip() else ""


def startup(cpus: int, repeats: int) -> None:
    print(f"\n### Executor start-up ({cpus} CPUs, every stage module preloaded; best of {repeats})\n")
    print("| executor | start s | close s |\n|---|---|---|")
    for kind in ("local", "ray"):
        runs = [json.loads(_python(STARTUP, kind, str(cpus))) for _ in range(repeats)]
        best = min(runs, key=lambda r: r["start_s"])
        label = "LocalExecutor (fork server)" if kind == "local" else "RayExecutor (local instance)"
        print(f"| {label} | {best['start_s']:.2f} | {best['close_s']:.2f} |")


def overhead(cpus: int, n: int) -> None:
    print(f"\n### Per-item overhead: a function that does nothing, {n} items, {cpus} CPUs\n")
    print("| executor | wall s | ms per item |\n|---|---|---|")
    for kind in ("local", "ray"):
        for label, seconds in json.loads(_python(OVERHEAD, kind, str(cpus), str(n))).items():
            print(f"| {label} | {seconds:.2f} | {1000 * seconds / n:.3f} |")


def synth(root: Path, n_tracks: int, min_s: float, max_s: float) -> Path:
    from tunekit.corpus.synth import SynthConfig, synthesize

    synthesize(SynthConfig(out=str(root), n_tracks=n_tracks, min_seconds=min_s, max_seconds=max_s, quiet=True))
    return root


def prep(corpus: Path, out: Path, overrides: list[str]) -> tuple[dict, float]:
    t0 = time.perf_counter()
    _python(RUN, f"corpus={corpus}", f"out={out}", "quiet=true", *overrides)
    return json.loads((out / "summary.json").read_text()), time.perf_counter() - t0


def _safetensors(path: Path) -> tuple[dict[str, str], dict[str, bytes]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        return dict(f.metadata() or {}), {k: f.get_tensor(k).tobytes() for k in f.keys()}


def _same(a: Path, b: Path) -> bool:
    """Byte for byte; safetensors files by metadata and tensors (their header lists the metadata in any order)."""
    if not b.is_file():
        return False
    if a.suffix == ".safetensors":
        return _safetensors(a) == _safetensors(b)
    return a.read_bytes() == b.read_bytes()


def same_outputs(a: Path, b: Path) -> str:
    """Whether two prep outputs hold the same tables, stored audio, tokens and latents."""
    names = ["tracks.parquet", "windows.parquet"]
    names += sorted(p.relative_to(a).as_posix() for d in ("audio", "tokens", "latents") if (a / d).is_dir()
                    for p in (a / d).rglob("*") if p.is_file())  # fmt: skip
    differ = [n for n in names if not _same(a / n, b / n)]
    return f"all {len(names)} files identical" if not differ else f"DIFFERENT: {differ[:5]}"


def stages(title: str, corpus: Path, tmp: Path, cpus: int, stage_names: tuple[str, ...], extra: list[str]) -> None:
    runs = {}
    for kind, overrides in (
        ("local", [f"workers={cpus}"]),
        ("ray", ["executor=ray", f"executor.num_cpus={cpus}"]),
    ):
        out = tmp / f"{title.replace(' ', '-').replace(',', '')}-{kind}"
        runs[kind] = (*prep(corpus, out, [*extra, *overrides]), out)
    summary = runs["local"][0]
    print(
        f"\n### {title}: {summary['counts']['tracks']} tracks, {summary['hours']['input'] * 3600:.0f} s of audio, "
        f"{summary['counts']['windows']} windows, {cpus} CPUs\n"
    )
    print("| stage | local wall s | local × real time | Ray wall s | Ray × real time |\n|---|---|---|---|---|")
    for name in stage_names:
        cells = [name]
        for kind in ("local", "ray"):
            s = runs[kind][0]["stages"][name]
            xr = s.get("x_realtime")
            cells += [f"{s['wall_s']:.2f}", "-" if xr is None else f"{xr:.1f}"]
        print("| " + " | ".join(cells) + " |")
    cells = ["**executor start-up** (not in the stages)"]
    for kind in ("local", "ray"):
        cells += [f"{runs[kind][0].get('workers_start_s', 0):.2f}", ""]
    print("| " + " | ".join(cells) + " |")
    cells = ["**whole run** (process start to exit)"]
    for kind in ("local", "ray"):
        cells += [f"{runs[kind][1]:.1f}", ""]
    print("| " + " | ".join(cells) + " |")
    print(f"\noutputs, local against Ray: {same_outputs(runs['local'][2], runs['ray'][2])}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=["startup", "overhead", "stages", "acestep"],
                        choices=["startup", "overhead", "stages", "acestep"])  # fmt: skip
    parser.add_argument("--cpus", type=int, default=2, help="local workers and Ray CPUs")
    parser.add_argument("--items", type=int, default=2000, help="items of the overhead part")
    parser.add_argument("--repeats", type=int, default=3, help="start-up measurements (the best is kept)")
    parser.add_argument("--corpus", type=Path, help="corpus of the non-model stages (default: synthesised demo)")
    parser.add_argument("--model-tracks", type=int, default=4, help="tracks of the all-stages run")
    parser.add_argument("--model-seconds", type=float, default=20.0, help="length of those tracks")
    args = parser.parse_args(argv)

    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(
        f"{platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores, load average {load} "
        f"at the start, Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}"
    )
    tmp = Path(tempfile.mkdtemp(prefix="tunekit-bench-ray-"))
    try:
        if "startup" in args.parts:
            startup(args.cpus, args.repeats)
        if "overhead" in args.parts:
            overhead(args.cpus, args.items)
        short_windows = ["models=tiny", "window.seconds=10", "window.min_seconds=5", "quality.min_seconds=5"]
        if "stages" in args.parts:
            corpus = args.corpus or synth(tmp / "demo", 12, 30.0, 120.0)
            stages("Non-model stages", corpus, tmp, args.cpus, CORE,
                   ["stages=[ingest,license,decode,quality,dedupe,loudness,window,split]"])  # fmt: skip
        if "stages" in args.parts or "acestep" in args.parts:
            short = synth(tmp / "short", args.model_tracks, args.model_seconds, args.model_seconds)
        if "stages" in args.parts:
            stages("Every MusicGen stage, tiny models", short, tmp, args.cpus, MODEL, short_windows)
        if "acestep" in args.parts:
            stages("Every ACE-Step stage, tiny models", short, tmp, args.cpus, ACESTEP,
                   ["pipeline=acestep", *short_windows])  # fmt: skip
        load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
        print(f"\nload average {load} at the end")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
