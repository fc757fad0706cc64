"""Rows per second from a local Parquet dataset against the same audio as files, and the dataset scan's memory.

    python bench/bench_hf_source.py                          # 48 tracks of 10 s, workers 2
    python bench/bench_hf_source.py --n-tracks 200 --seconds 30 --workers 1 2

Writes N synthetic stereo tracks (44.1 kHz, 16-bit FLAC) twice: as files with a sidecar JSON licence each, and
as one Parquet dataset holding the same FLAC bytes in a `datasets` Audio column (row groups of 16 rows, the
licence in a column). Then, for both, in fresh processes: the scan alone (files: listing and sidecars; dataset:
streaming the rows and writing their audio into the cache), the full core prep (`stages=CORE_STAGES`) from
scratch, and its re-run (everything cached). Rows per second are tracks over the run's own wall time
(summary.json). Last, pyarrow's peak allocation while the dataset is scanned at N and 4N rows: it stays at about
one row group. Prints markdown tables for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import io
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

RATE = 44100
ROW_GROUP = 16

RUNNER = """
import json, sys
from tunekit.prep.config import CORE_STAGES, PrepConfig
from tunekit.prep.run import run_prep

if __name__ == "__main__":
    sys.exit(run_prep(PrepConfig(corpus=sys.argv[1], out=sys.argv[2], workers=int(sys.argv[3]), quiet=True,
                                 stages=list(CORE_STAGES))))
"""

SCANNER = """
import sys, time
from pathlib import Path
import pyarrow.parquet  # imported before the clock starts, as tunekit.corpus.metadata is for the files
from tunekit.corpus.metadata import load_corpus_metadata
from tunekit.prep.config import IngestConfig, SourceConfig
from tunekit.prep.hf_source import open_dataset, scan_dataset
from tunekit.prep.ingest import scan_corpus

if __name__ == "__main__":
    corpus, cache = Path(sys.argv[1]), Path(sys.argv[2])
    t0 = time.perf_counter()
    ds = open_dataset(corpus, SourceConfig())
    rows = scan_dataset(ds, cache)[0] if ds is not None else scan_corpus(corpus, IngestConfig())[0]
    print(len(rows), time.perf_counter() - t0)
"""


def track(seconds: float, seed: int) -> bytes:
    """One FLAC track: a few tones and noise, so it is broadband and passes the quality checks."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    tones = sum(0.1 * np.sin(2 * np.pi * rng.uniform(80, 4000) * t + rng.uniform(0, 6)) for _ in range(6))
    x = np.stack([tones + 0.05 * rng.standard_normal(t.size) for _ in range(2)]).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, x.T, RATE, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def write_both(root: Path, n: int, seconds: float) -> tuple[Path, Path, int]:
    """The same tracks as a folder of files and as a Parquet dataset; returns (files, dataset, audio bytes)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files, dataset = root / "files", root / "dataset"
    (dataset / "data").mkdir(parents=True)
    files.mkdir(parents=True)
    blobs = [track(seconds, seed) for seed in range(n)]
    licences = ["CC-BY-4.0" if i % 2 else "CC0-1.0" for i in range(n)]
    for i, (blob, lic) in enumerate(zip(blobs, licences)):
        (files / f"t{i:05d}.flac").write_bytes(blob)
        (files / f"t{i:05d}.json").write_text(json.dumps({"license": lic, "title": f"t{i}"}))
    audio = pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])
    features = {"audio": {"_type": "Audio"}, "license": {"dtype": "string", "_type": "Value"},
                "title": {"dtype": "string", "_type": "Value"}}  # fmt: skip
    schema = pa.schema([pa.field("audio", audio), pa.field("license", pa.string()), pa.field("title", pa.string())],
                       metadata={"huggingface": json.dumps({"info": {"features": features}})})  # fmt: skip
    table = pa.Table.from_pylist(
        [{"audio": {"bytes": b, "path": f"t{i:05d}.flac"}, "license": lic, "title": f"t{i}"}
         for i, (b, lic) in enumerate(zip(blobs, licences))], schema=schema)  # fmt: skip
    pq.write_table(table, dataset / "data" / "train-00000-of-00001.parquet", row_group_size=ROW_GROUP)
    return files, dataset, sum(len(b) for b in blobs)


def prep(corpus: Path, out: Path, workers: int) -> dict:
    """One core prep in a fresh process; its summary.json."""
    res = subprocess.run([sys.executable, "-c", RUNNER, str(corpus), str(out), str(workers)], capture_output=True,
                         text=True)  # fmt: skip
    if res.returncode:
        raise SystemExit(f"prep of {corpus} failed:\n{res.stderr[-3000:]}")
    return json.loads((out / "summary.json").read_text())


def scan(corpus: Path, cache: Path) -> tuple[int, float]:
    """(rows, seconds) of the scan alone, in a fresh process with an empty cache."""
    res = subprocess.run([sys.executable, "-c", SCANNER, str(corpus), str(cache)], check=True, capture_output=True,
                         text=True)  # fmt: skip
    rows, seconds = res.stdout.split()
    return int(rows), float(seconds)


def arrow_peak(dataset: Path, cache: Path, repeat: int) -> tuple[int, int, int, int]:
    """(rows, pyarrow peak bytes while scanning, audio bytes, rows per row group) of the dataset repeated."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tunekit.prep.config import SourceConfig
    from tunekit.prep.hf_source import open_dataset, scan_dataset

    src = dataset / "data" / "train-00000-of-00001.parquet"
    big = cache.parent / f"x{repeat}"
    (big / "data").mkdir(parents=True, exist_ok=True)
    table = pq.read_table(src)
    with pq.ParquetWriter(str(big / "data" / "train.parquet"), table.schema) as w:
        for _ in range(repeat):
            w.write_table(table, row_group_size=ROW_GROUP)
    del table
    size = sum(len(b or b"") for b in pq.read_table(big / "data" / "train.parquet", columns=["audio"])
               .column("audio").combine_chunks().field("bytes").to_pylist())  # fmt: skip

    class Peak:
        bytes = 0

        def start_stage(self, *a: object) -> None: ...

        def advance(self, *a: object, **k: object) -> None:
            Peak.bytes = max(Peak.bytes, pa.total_allocated_bytes())

        def end_stage(self, *a: object) -> None: ...

    base = pa.total_allocated_bytes()
    rows, _ = scan_dataset(open_dataset(big, SourceConfig()), cache, Peak())
    group = pq.ParquetFile(big / "data" / "train.parquet").metadata.row_group(0).num_rows
    return len(rows), Peak.bytes - base, size, group


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-tracks", type=int, default=48)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, nargs="+", default=[2])
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="tunekit-bench-hf-"))
    try:
        t0 = time.perf_counter()
        files, dataset, nbytes = write_both(tmp, args.n_tracks, args.seconds)
        print(f"wrote {args.n_tracks} tracks ({nbytes / 1e6:.1f} MB of FLAC) twice in "
              f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)  # fmt: skip
        load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
        print(f"\n{platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores, load "
              f"{load} before the runs, Python {platform.python_version()}; {args.n_tracks} tracks x "
              f"{args.seconds:g} s, {nbytes / 1e6:.1f} MB FLAC, row groups of {ROW_GROUP}\n")  # fmt: skip
        print("| corpus | scan rows/s | scan MB/s | workers | prep wall s | prep rows/s | x real time | "
              "re-run wall s |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|")
        audio_s = args.n_tracks * args.seconds
        for name, corpus in (("files (FLAC + sidecar)", files), ("Parquet dataset", dataset)):
            rows, scan_s = scan(corpus, tmp / f"scan-{corpus.name}")
            for w in args.workers:
                out = tmp / f"out-{corpus.name}-{w}"
                summary = prep(corpus, out, w)
                again = prep(corpus, out, w)
                assert summary["counts"]["ok"] == args.n_tracks, summary["counts"]
                wall = summary["wall_s"]
                print(f"| {name} | {rows / scan_s:.0f} | {nbytes / 1e6 / scan_s:.0f} | {w} | {wall:.1f} | "
                      f"{args.n_tracks / wall:.2f} | {audio_s / wall:.0f} | {again['wall_s']:.2f} |")  # fmt: skip
        peak_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
        print(f"\npeak RSS of any prep process: {peak_rss:.0f} MB\n")
        print("| dataset rows | audio MB | pyarrow peak while scanning MB | one row group (rows, MB) |")
        print("|---|---|---|---|")
        for repeat in (1, 4):
            rows, peak, size, group = arrow_peak(dataset, tmp / f"mem{repeat}" / "cache", repeat)
            print(f"| {rows} | {size / 1e6:.1f} | {peak / 1e6:.1f} | {group}, {size / rows * group / 1e6:.1f} |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
