"""Compute time of KAD against FAD on embedding frames, and of one paired-bootstrap resample of each.

    .venv/bin/python bench/bench_kad.py                              # CPU, N = 2000 frames per side, d = 512 and 2048
    .venv/bin/python bench/bench_kad.py --device cuda --n 2000 10000 --dims 512 2048
    .venv/bin/python bench/bench_kad.py --threads 1 --repeats 7 --clips 100

Both sides are N frames of Gaussian noise (the generated side shifted by 0.1), float32 as the embedders give
them. Timed, each from the frames to the number:

- FAD, from frames: both sides' mean and covariance, √Σ of the reference, the distance (tunekit.eval.frechet);
- FAD, prepared reference: the generated side's statistics and the distance to a reference whose √Σ is ready;
- KAD, from frames: the reference's bandwidth (median pairwise distance) and kernel mean, then the generated
  side's kernel sums (tunekit.eval.kad, float64, blocks of 2048);
- KAD, prepared reference: the generated side's kernel sums only (the reference's share is computed once per
  evaluation).

Plus one paired-bootstrap resample of `--clips` clips (`FadGroups.value`, `KadGroups.value`), as `tunekit eval
run=` does `bootstrap` times per side and embedding. Methods are interleaved within each repeat (one warm-up
round first) and medians reported, so a load spike on a shared machine hits all of them alike; CPU time (all
threads of the process) is given beside wall time, as it moves less on a shared machine. FAD runs on NumPy
(CPU); KAD on `--device`. `--threads` limits torch and the BLAS (through threadpoolctl). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np


def timed(fn: Callable[[], object]) -> tuple[float, float, object]:
    """(wall s, CPU s of the whole process, value) of one call."""
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - start, time.process_time() - cpu, out


def methods(x: np.ndarray, y: np.ndarray, clips: int, device: str) -> dict[str, Callable[[], object]]:
    """The timed computations for one (N, d), each returning its value."""
    from tunekit.eval.fad import FadGroups
    from tunekit.eval.frechet import FrechetReference, stats
    from tunekit.eval.kad import KadReference
    from tunekit.eval.paired import resample_counts

    fad_ref = FrechetReference(*stats(y))
    kad_ref = KadReference(y, device=device)
    _ = kad_ref.within_mean
    parts = np.array_split(x, clips)
    fad_groups = FadGroups(parts, fad_ref)
    kad_groups = kad_ref.groups(parts)
    one = resample_counts(clips, 1, seed=0)

    def sync() -> None:
        if device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()

    def kad_from_frames() -> float:
        value = KadReference(y, device=device).distance(x)
        sync()
        return value

    def kad_prepared() -> float:
        value = kad_ref.distance(x)
        sync()
        return value

    return {
        "FAD, from frames": lambda: FrechetReference(*stats(y)).distance(*stats(x)),
        "FAD, prepared reference": lambda: fad_ref.distance(*stats(x)),
        "KAD, from frames": kad_from_frames,
        "KAD, prepared reference": kad_prepared,
        f"FAD, one resample of {clips} clips": lambda: float(fad_groups.value(one)[0]),
        f"KAD, one resample of {clips} clips": lambda: float(kad_groups.value(one)[0]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[2000], help="frames per side")
    parser.add_argument("--dims", type=int, nargs="+", default=[512, 2048], help="embedding dimensions")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds after one warm-up round")
    parser.add_argument("--clips", type=int, default=100, help="clips the generated frames are split into (bootstrap rows)")
    parser.add_argument("--device", default="cpu", help="torch device for KAD (cpu, cuda)")
    parser.add_argument("--threads", type=int, default=0, help="torch and BLAS threads (0: their defaults)")
    args = parser.parse_args()

    import torch

    if args.threads > 0:
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)
    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}, numpy {np.__version__}, KAD on {args.device}")
    print("| N | d | method | median wall s | min–max wall s | median CPU s | value |")
    print("|---|---|---|---|---|---|---|")
    for n in args.n:
        for d in args.dims:
            rng = np.random.default_rng(0)
            y = rng.standard_normal((n, d)).astype(np.float32)
            x = (rng.standard_normal((n, d)) + 0.1).astype(np.float32)
            todo = methods(x, y, args.clips, args.device)
            times: dict[str, list[tuple[float, float]]] = {k: [] for k in todo}
            values: dict[str, object] = {}
            for r in range(args.repeats + 1):
                for name, fn in todo.items():
                    wall, cpu, values[name] = timed(fn)
                    if r > 0:
                        times[name].append((wall, cpu))
            for name, ts in times.items():
                walls, cpus = [t[0] for t in ts], [t[1] for t in ts]
                print(f"| {n} | {d} | {name} | {statistics.median(walls):.3g} | {min(walls):.3g}–{max(walls):.3g} | "
                      f"{statistics.median(cpus):.3g} | {values[name]:.6g} |", flush=True)


if __name__ == "__main__":
    main()
