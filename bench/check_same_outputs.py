"""Same outputs before and after: record what the demo path produces on tiny models, and compare two recordings.

    .venv/bin/python bench/check_same_outputs.py record after.json                      # this checkout's tunekit
    .venv/bin/python bench/check_same_outputs.py record before.json --repo /tmp/before  # another checkout's
    .venv/bin/python bench/check_same_outputs.py compare before.json after.json

For a change that must not change behaviour (a refactor, a move between modules):

1. Record on the commit before the change. Either record before editing any code, or check the old commit out
   beside this one and point --repo at it, with this script and the same venv:
       git worktree add /tmp/before <commit>   # or: mkdir /tmp/before; git archive <commit> | tar -x -C /tmp/before
       .venv/bin/python bench/check_same_outputs.py record before.json --repo /tmp/before
       git worktree remove /tmp/before
2. Record after the change: `record after.json`.
3. `compare before.json after.json` prints every item that differs (both values) and exits 1, or prints
   "identical: N items" and exits 0. Say so in the commit that lands the change.

A recording takes 1.5 to 3 minutes on two CPU cores (longer the busier they are). It runs, through the real
entry point (`python -m tunekit`, with --repo's src/ first on PYTHONPATH), in a fresh folder (--work, else a
temporary one), offline, on the CPU, with one thread (OMP/MKL/OPENBLAS_NUM_THREADS=1 and
torch.set_num_threads(1)), fixed seeds and PYTHONHASHSEED=0, with its own TUNEKIT_CACHE (tiny models built
afresh) and HF_HOME:

    tunekit corpus synth   6 tracks of 12-20 s (licence fixtures reject 2; 4 kept: 2 train, 1 valid, 1 test)
    tunekit prep           models=tiny workers=1, the musicgen pipeline (every stage)
    tunekit train          recipe=demo logger=none (40 LoRA steps, two validations with a sample, two checkpoints)
    tunekit eval           run mode, models=tiny logger=none, 2 clips of 5 s per model against valid+test

Between synth and prep the Ogg file's random stream serial is set to 1 (fix_ogg_serials): its bytes, hence prep's
content hash and cache keys, are then the same in every run; its audio is untouched.

Then every file the commands wrote is recorded as items, read as data rather than as bytes where a format's bytes
can differ for the same content:

- Parquet tables: the schema (names and types), the row count, and each column's values (exact; digested when
  long). Columns left out: none (TABLE_VOLATILE_COLUMNS says why).
- Audio (corpus, prep/audio, training samples, eval clips): the decoded samples as float64 (exact for PCM and
  float files), with rate and shape; never the file bytes (headers can differ).
- Token .npy files: dtype, shape and the array's bytes. safetensors and torch files (adapter, checkpoints,
  optimiser state): every tensor's name, dtype, shape and bytes.
- JSON, JSONL and YAML (summary, manifest, metrics.jsonl, metrics.json, checkpoint state, sidecars, the run's
  config.yaml): every leaf by key path, floats exactly; the keys in VOLATILE_KEYS (durations, memory, versions)
  are left out.
- Text files: their text, without the lines in VOLATILE_LINES. Any other file: its bytes.
- The exit code of each command, and the names of prep's stage cache entries (the cache keys: were they to
  change, every user's cache would recompute).

Strings have the work folder's path replaced by <work> and the checkout's by <repo>. Files not recorded are
matched by EXCLUDED, each with its reason; every other file is recorded, so a file one side wrote and the other
did not shows up in `compare`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
FORMAT = 1

# Each command runs in the work folder with relative paths; devices are pinned to the CPU so that a recording on a
# GPU machine computes the same thing.
COMMANDS: list[tuple[str, list[str]]] = [
    ("synth", ["corpus", "synth", "out=corpus", "seed=0", "n_tracks=6", "min_seconds=12", "max_seconds=20",
               "workers=1", "quiet=true"]),
    ("prep", ["prep", "corpus=corpus", "out=prep", "models=tiny", "workers=1", "quiet=true", "separate.device=cpu",
              "tag.device=cpu", "caption.device=cpu", "tokens.device=cpu"]),
    ("train", ["train", "recipe=demo", "data=prep", "out=run", "logger=none", "trainer.device=cpu", "trainer.seed=0"]),
    ("eval", ["eval", "run=run", "models=tiny", "logger=none", "n_samples=2", "duration=5",
              "reference_splits=[valid,test]", "device=cpu", "seed=0"]),
]

# `python -m tunekit` after pinning torch to one thread (the environment pins OpenMP, MKL and OpenBLAS too).
BOOT = ("import runpy, sys, torch; torch.set_num_threads(1); sys.argv[0] = 'tunekit'; "
        "runpy.run_module('tunekit', run_name='__main__', alter_sys=True)")

# Files not recorded, as globs relative to the work folder (`**` crosses folders), with the reason.
EXCLUDED: dict[str, str] = {
    "logs/*": "the commands' own output: progress lines with timings",
    "cache/**": "tiny models and evaluation statistics; their fingerprints are in windows.parquet "
                "(tokens_codec_hash) and metrics.json (embeddings.*.fingerprint), their effect in every output",
    "hf/**": "HF_HOME, set only so that no user cache is read",
    "prep/prep.log": "every line starts with a timestamp and most end with durations",
    "prep/.lock": "an empty lock file",
    "prep/.cache/**": "stage cache entries hold the rows and artifacts already recorded from the outputs; "
                      "their names (the cache keys) are recorded as prep/.cache:<stage>",
    "run/eval/report.html": "renders metrics.json (recorded leaf by leaf) with its creation time and library "
                            "versions, and images whose encoder may embed metadata",
}

# Parquet columns whose values may differ from run to run: none. No column of tracks.parquet or windows.parquet
# holds a time, a host name or an absolute path (source_path, audio_path and tokens_path are relative).
TABLE_VOLATILE_COLUMNS: dict[str, set[str]] = {}

# JSON keys (the last part of a leaf's key path, at any depth) left out per file glob.
VOLATILE_KEYS: dict[str, set[str]] = {
    # durations, speeds and the version string
    "prep/summary.json": {"wall_s", "compute_s", "x_realtime", "x_realtime_per_worker", "workers_start_s",
                          "tunekit_version"},
    # durations and memory; loss, lr, grad_norm, tokens, epoch and the skip counters stay
    "run/metrics.jsonl": {"step_s", "cpu_s", "data_s", "rss_peak_gib", "tokens_per_s"},
    # the creation time and library versions
    "run/eval/metrics.json": {"created", "versions"},
    # a digest of every file in run/adapter/, README.md included, whose tokens_per_s line is a measured speed;
    # the adapter's tensors are recorded from adapter_model.safetensors
    "run/eval/audio/finetuned/generation.json": {"weights"},
}

# Lines of text files left out, as regular expressions per file glob.
VOLATILE_LINES: dict[str, list[str]] = {
    "run/README.md": [r"^- tokens_per_s: "],  # the model card's measured throughput
    "run/adapter/README.md": [r"^- tokens_per_s: "],  # the same model card, saved with the adapter
}

AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus"}
TEXT_SUFFIXES = {".md", ".csv", ".txt", ".tsv", ".html"}
LIST_LIMIT = 16  # a JSON list of more scalars than this is one item (e.g. an RNG state), not one per element
VALUE_LIMIT = 160  # a value whose JSON is longer than this is recorded as its digest


# ---- recording ------------------------------------------------------------------------------------------------


def child_env(work: Path, repo: Path) -> dict[str, str]:
    """The commands' environment: offline, CPU only, one thread, fixed hashing, caches inside `work`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TUNEKIT_", "WANDB_", "HF_")) and k not in ("PYTHONPATH", "XDG_CACHE_HOME")}
    one = {k: "1" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
                            "NUMEXPR_NUM_THREADS")}
    return {
        **env, **one,
        "PYTHONPATH": str(repo / "src"),
        "PYTHONHASHSEED": "0",
        "CUDA_VISIBLE_DEVICES": "",
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
        "HF_HOME": str(work / "hf"),
        "WANDB_MODE": "offline", "WANDB_SILENT": "true", "TOKENIZERS_PARALLELISM": "false",
        "TUNEKIT_CACHE": str(work / "cache"),
    }


def tunekit_source(python: str, env: dict[str, str]) -> Path:
    """The folder of the tunekit package the commands import."""
    out = subprocess.run([python, "-c", "import tunekit; print(tunekit.__file__)"], env=env, check=True,
                         capture_output=True, text=True)
    return Path(out.stdout.strip()).resolve().parent


def git_state(repo: Path) -> dict[str, Any]:
    """Commit and dirtiness of `repo`, if it is a git checkout (read-only git commands)."""
    def git(*args: str) -> str | None:
        r = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(status) if status is not None else None}


def _ogg_crc_table() -> list[int]:
    table = []
    for i in range(256):
        r = i << 24
        for _ in range(8):
            r = ((r << 1) ^ 0x04C11DB7) if r & 0x80000000 else r << 1
            r &= 0xFFFFFFFF
        table.append(r)
    return table


def _ogg_crc(page: bytes, table: list[int]) -> int:
    """Ogg's page checksum: CRC-32, polynomial 0x04C11DB7, not reflected, initial value 0, no final xor."""
    crc = 0
    for b in page:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ table[((crc >> 24) ^ b) & 0xFF]
    return crc


def fix_ogg_serials(folder: Path) -> list[Path]:
    """Give the logical streams of every OGG file under `folder` the serial numbers 1, 2, … (page checksums
    recomputed). The encoder picks a random serial, so the synthesised corpus's OGG bytes, and the content hash
    and cache keys prep derives from them, would differ from run to run; the audio is the same."""
    table = _ogg_crc_table()
    fixed = []
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() not in (".ogg", ".oga", ".opus") or not path.is_file():
            continue
        data = bytearray(path.read_bytes())
        serials: dict[bytes, bytes] = {}
        pos = 0
        while pos < len(data):
            if data[pos:pos + 4] != b"OggS":
                raise SystemExit(f"{path}: not an Ogg page at byte {pos}; cannot make its bytes reproducible")
            n_segments = data[pos + 26]
            size = 27 + n_segments + sum(data[pos + 27:pos + 27 + n_segments])
            old = bytes(data[pos + 14:pos + 18])
            data[pos + 14:pos + 18] = serials.setdefault(old, (len(serials) + 1).to_bytes(4, "little"))
            data[pos + 22:pos + 26] = b"\0\0\0\0"
            data[pos + 22:pos + 26] = _ogg_crc(bytes(data[pos:pos + size]), table).to_bytes(4, "little")
            pos += size
        path.write_bytes(bytes(data))
        fixed.append(path)
    return fixed


def run_commands(work: Path, repo: Path, python: str) -> tuple[dict[str, int], dict[str, float]]:
    """Run COMMANDS in `work`; returns exit codes and seconds per command. Stops at the first failure."""
    env = child_env(work, repo)
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    codes: dict[str, int] = {}
    seconds: dict[str, float] = {}
    for name, args in COMMANDS:
        t0 = time.perf_counter()
        with open(logs / f"{name}.log", "w") as log:
            rc = subprocess.run([python, "-c", BOOT, *args], cwd=work, env=env, stdout=log,
                                stderr=subprocess.STDOUT).returncode
        seconds[name] = round(time.perf_counter() - t0, 1)
        codes[name] = rc
        print(f"  {name:<6} exit {rc} in {seconds[name]:.0f} s", flush=True)
        if rc != 0:
            tail = (logs / f"{name}.log").read_text(errors="replace").splitlines()[-30:]
            raise SystemExit(f"`tunekit {' '.join(args)}` failed (exit {rc}); log {logs / f'{name}.log'}:\n"
                             + "\n".join(tail))
        if name == "synth":
            for path in fix_ogg_serials(work / "corpus"):
                print(f"         fixed the Ogg stream serial of {path.relative_to(work)}", flush=True)
    return codes, seconds


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Normaliser:
    """Replaces the work folder's and the checkout's paths in strings, so recordings made elsewhere compare."""

    def __init__(self, work: Path, repo: Path) -> None:
        pairs = {str(work): "<work>", str(work.resolve()): "<work>", str(repo): "<repo>",
                 str(repo.resolve()): "<repo>"}
        self.pairs = sorted(pairs.items(), key=lambda kv: -len(kv[0]))  # longest first: work may lie in repo

    def text(self, s: str) -> str:
        for old, new in self.pairs:
            s = s.replace(old, new)
        return s

    def value(self, x: Any) -> Any:
        if isinstance(x, str):
            return self.text(x)
        if isinstance(x, list):
            return [self.value(v) for v in x]
        if isinstance(x, dict):
            return {k: self.value(v) for k, v in x.items()}
        return x


def canonical(x: Any) -> str:
    """JSON with sorted keys; floats as Python writes them (shortest repr, exact round trip; NaN and Infinity)."""
    return json.dumps(x, sort_keys=True, ensure_ascii=False, default=str)


def summarise(x: Any) -> Any:
    """The value itself when short; otherwise its digest and size."""
    text = canonical(x)
    if len(text) <= VALUE_LIMIT:
        return x
    return f"sha256:{sha256(text.encode())} ({len(text)} chars of JSON)"


def matches(rel: str, patterns: Any) -> bool:
    """Whether `rel` matches any glob in `patterns` (`**` crosses folders, `*` does not)."""
    for pattern in patterns:
        regex = re.escape(pattern).replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
        if re.fullmatch(regex, rel):
            return True
    return False


def volatile(table: dict[str, Any], rel: str) -> Any:
    """The merged entries of `table` whose glob matches `rel`."""
    hits = [v for k, v in table.items() if matches(rel, [k])]
    if not hits:
        return set()
    return set().union(*hits) if isinstance(hits[0], set) else [x for h in hits for x in h]


def leaves(x: Any, prefix: str, drop: set[str]) -> dict[str, Any]:
    """Flatten JSON into {key path: value}; keys in `drop` (at any depth) are left out."""
    if isinstance(x, dict):
        out: dict[str, Any] = {}
        for k in sorted(x):
            if k not in drop:
                out.update(leaves(x[k], f"{prefix}.{k}" if prefix else str(k), drop))
        if not x:
            out[prefix] = {}
        return out
    if isinstance(x, list) and x and all(not isinstance(v, (dict, list)) for v in x) and len(x) > LIST_LIMIT:
        return {prefix: summarise(x)}
    if isinstance(x, list) and x:
        out = {}
        for i, v in enumerate(x):
            out.update(leaves(v, f"{prefix}[{i}]", drop))
        return out
    return {prefix: summarise(x)}


def record_table(path: Path, rel: str, norm: Normaliser) -> dict[str, Any]:
    """Schema, row count and each column's values of a Parquet table (read as data, not as file bytes)."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    drop = volatile(TABLE_VOLATILE_COLUMNS, rel)
    items: dict[str, Any] = {
        f"{rel}:schema": summarise([f"{f.name}: {f.type}" for f in table.schema]),
        f"{rel}:rows": table.num_rows,
    }
    for name in table.column_names:
        if name not in drop:
            items[f"{rel}:column:{name}"] = summarise(norm.value(table.column(name).to_pylist()))
    return items


def record_audio(path: Path, rel: str) -> dict[str, Any]:
    """Rate, shape and a digest of the decoded samples (float64: exact for 16/24/32-bit PCM and float files)."""
    import numpy as np
    import soundfile as sf

    samples, rate = sf.read(str(path), dtype="float64", always_2d=True)
    data = np.ascontiguousarray(samples, dtype="<f8").tobytes()
    return {f"{rel}:samples": f"{rate} Hz, {samples.shape[1]} ch x {samples.shape[0]}, sha256:{sha256(data)}"}


def record_npy(path: Path, rel: str) -> dict[str, Any]:
    import numpy as np

    a = np.load(path, allow_pickle=False)
    return {f"{rel}:array": f"{a.dtype.str} {list(a.shape)}, sha256:{sha256(np.ascontiguousarray(a).tobytes())}"}


def record_safetensors(path: Path, rel: str) -> dict[str, Any]:
    """Every tensor's name, dtype, shape and bytes, read from the file's header and data (not its metadata)."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        data = f.read()
    header.pop("__metadata__", None)
    h = hashlib.sha256()
    for name in sorted(header):
        info = header[name]
        start, end = info["data_offsets"]
        h.update(canonical([name, info["dtype"], info["shape"]]).encode())
        h.update(data[start:end])
    return {f"{rel}:tensors": f"{len(header)} tensors, sha256:{h.hexdigest()}"}


def record_torch(path: Path, rel: str, norm: Normaliser) -> dict[str, Any]:
    """A torch.save file (optimizer state): every tensor's dtype, shape and bytes, every other value as JSON."""
    import torch

    obj = torch.load(path, map_location="cpu", weights_only=True)
    h = hashlib.sha256()
    count = 0

    def walk(x: Any, key: str) -> None:
        nonlocal count
        if isinstance(x, torch.Tensor):
            t = x.detach().contiguous()
            h.update(canonical([key, str(t.dtype), list(t.shape)]).encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
            count += 1
        elif isinstance(x, dict):
            for k in sorted(x, key=str):
                walk(x[k], f"{key}.{k}")
        elif isinstance(x, (list, tuple)):
            for i, v in enumerate(x):
                walk(v, f"{key}[{i}]")
        else:
            h.update(canonical([key, norm.value(x)]).encode())

    walk(obj, "")
    return {f"{rel}:torch": f"{count} tensors, sha256:{h.hexdigest()}"}


def record_json(path: Path, rel: str, norm: Normaliser) -> dict[str, Any]:
    drop = volatile(VOLATILE_KEYS, rel)
    found = leaves(norm.value(json.loads(path.read_text())), "", drop)
    return {f"{rel}:{k}": v for k, v in found.items()}


def record_yaml(path: Path, rel: str, norm: Normaliser) -> dict[str, Any]:
    """A YAML mapping (a run's config.yaml) leaf by leaf, like JSON; other YAML as text."""
    import yaml

    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        return record_text(path, rel, norm)
    found = leaves(norm.value(data), "", volatile(VOLATILE_KEYS, rel))
    return {f"{rel}:{k}": v for k, v in found.items()}


def record_jsonl(path: Path, rel: str, norm: Normaliser) -> dict[str, Any]:
    drop = volatile(VOLATILE_KEYS, rel)
    items: dict[str, Any] = {}
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    items[f"{rel}:lines"] = len(lines)
    for i, line in enumerate(lines):
        for k, v in leaves(norm.value(json.loads(line)), "", drop).items():
            items[f"{rel}:[{i}].{k}"] = v
    return items


def record_text(path: Path, rel: str, norm: Normaliser) -> dict[str, Any]:
    masks = [re.compile(p) for p in volatile(VOLATILE_LINES, rel)]
    lines = [line for line in norm.text(path.read_text()).splitlines() if not any(m.search(line) for m in masks)]
    return {f"{rel}:text": summarise("\n".join(lines))}


def record_file(path: Path, rel: str, norm: Normaliser) -> dict[str, Any]:
    """The items of one output file, read according to its format."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return record_table(path, rel, norm)
    if suffix in AUDIO_SUFFIXES:
        return record_audio(path, rel)
    if suffix == ".npy":
        return record_npy(path, rel)
    if suffix == ".safetensors":
        return record_safetensors(path, rel)
    if suffix in (".pt", ".pth", ".bin"):
        return record_torch(path, rel, norm)
    if suffix == ".json":
        return record_json(path, rel, norm)
    if suffix == ".jsonl":
        return record_jsonl(path, rel, norm)
    if suffix in (".yaml", ".yml"):
        return record_yaml(path, rel, norm)
    if suffix in TEXT_SUFFIXES:
        return record_text(path, rel, norm)
    return {f"{rel}:bytes": f"sha256:{sha256(path.read_bytes())}"}


def record_outputs(work: Path, norm: Normaliser) -> dict[str, Any]:
    """Items for every file under `work` that EXCLUDED does not name, plus prep's stage cache keys."""
    items: dict[str, Any] = {}
    for path in sorted(p for p in work.rglob("*") if p.is_file() or p.is_symlink()):
        rel = path.relative_to(work).as_posix()
        if matches(rel, EXCLUDED):
            continue
        if path.is_symlink() or not path.is_file():
            raise SystemExit(f"cannot record {rel}: not a plain file; read it or add it to EXCLUDED with a reason")
        items.update(record_file(path, rel, norm))
    stages = work / "prep" / ".cache" / "stages"
    for stage in sorted(p for p in stages.iterdir() if p.is_dir()) if stages.is_dir() else []:
        keys = sorted(p.relative_to(stage).as_posix() for p in stage.rglob("*") if p.is_file())
        items[f"prep/.cache:{stage.name}"] = summarise(keys)
    return items


def cmd_record(args: argparse.Namespace) -> int:
    repo = Path(args.repo).resolve()
    if not (repo / "src" / "tunekit").is_dir():
        raise SystemExit(f"--repo {repo} has no src/tunekit: point it at a tunekit checkout")
    temporary = args.work is None
    work = Path(tempfile.mkdtemp(prefix="tunekit-same-")) if temporary else Path(args.work).resolve()
    if not temporary:
        if work.exists() and any(work.iterdir()):
            raise SystemExit(f"--work {work} is not empty: give a new or empty folder (outputs must be fresh)")
        work.mkdir(parents=True, exist_ok=True)
    env = child_env(work, repo)
    source = tunekit_source(args.python, env)
    if source != (repo / "src" / "tunekit").resolve():
        raise SystemExit(f"the commands would import tunekit from {source}, not {repo / 'src' / 'tunekit'}")
    git = git_state(repo)
    print(f"recording tunekit from {repo} ({git['commit'] or 'not a git checkout'}) in {work}", flush=True)
    t0 = time.perf_counter()
    codes, seconds = run_commands(work, repo, args.python)
    items = {f"exit:{name}": rc for name, rc in codes.items()}
    items.update(record_outputs(work, Normaliser(work, repo)))
    total = round(time.perf_counter() - t0, 1)
    import numpy
    import torch

    recording = {
        "format": FORMAT,
        "meta": {
            "repo": str(repo), **git, "note": args.note, "python": platform.python_version(),
            "torch": torch.__version__, "numpy": numpy.__version__, "machine": platform.machine(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": {**seconds, "total": total},
        },
        "settings": {"commands": [[name, *a] for name, a in COMMANDS], "excluded": EXCLUDED,
                     "volatile_keys": {k: sorted(v) for k, v in VOLATILE_KEYS.items()},
                     "volatile_lines": VOLATILE_LINES,
                     "volatile_columns": {k: sorted(v) for k, v in TABLE_VOLATILE_COLUMNS.items()}},
        "items": items,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(recording, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    print(f"recorded {len(items)} items in {total:.0f} s -> {out}")
    if temporary:
        shutil.rmtree(work, ignore_errors=True)
    return 0


# ---- comparing ------------------------------------------------------------------------------------------------


def _label(recording: dict[str, Any]) -> str:
    """Which tunekit a recording ran: commit (or repo) and note."""
    m = recording["meta"]
    where = f"commit {m['commit'][:12]}" + (" (dirty)" if m.get("dirty") else "") if m.get("commit") else m["repo"]
    return where + (f", {m['note']}" if m.get("note") else "")


def cmd_compare(args: argparse.Namespace) -> int:
    a, b = (json.loads(Path(p).read_text()) for p in (args.a, args.b))
    for name, r in (("A", a), ("B", b)):
        if r.get("format") != FORMAT:
            raise SystemExit(f"{name} is not a recording of format {FORMAT}: record it again with this script")
    if a["settings"] != b["settings"]:
        print("note: the recordings were made with different script settings (commands or exclusions); "
              "differences below may come from that")
    for key in ("python", "torch", "numpy", "machine"):
        if a["meta"].get(key) != b["meta"].get(key):
            print(f"note: {key} differs ({a['meta'].get(key)} vs {b['meta'].get(key)}); "
                  "float results may differ for that reason alone")
    ia, ib = a["items"], b["items"]
    lines = []
    for key in sorted(ia.keys() | ib.keys()):
        if key not in ib:
            lines.append(f"only in A: {key} = {canonical(ia[key])}")
        elif key not in ia:
            lines.append(f"only in B: {key} = {canonical(ib[key])}")
        elif canonical(ia[key]) != canonical(ib[key]):
            lines.append(f"differs: {key}\n  A: {canonical(ia[key])}\n  B: {canonical(ib[key])}")
    if lines:
        print(f"A: {_label(a)} ({a['meta']['created']})\nB: {_label(b)} ({b['meta']['created']})")
        print("\n".join(lines))
        print(f"{len(lines)} of {len(ia.keys() | ib.keys())} items differ")
        return 1
    print(f"identical: {len(ia)} items (A: {_label(a)}; B: {_label(b)})")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="run the demo path on tiny models and record its outputs")
    rec.add_argument("out", help="recording to write (JSON)")
    rec.add_argument("--work", help="folder for the run, new or empty, kept afterwards (default: a temporary "
                                    "folder, removed after a successful recording)")
    rec.add_argument("--repo", default=str(REPO), help="tunekit checkout whose src/ the commands run "
                                                       "(default: the one holding this script)")
    rec.add_argument("--note", default="", help="free text kept in the recording and shown by compare "
                                                "(e.g. the commit of a --repo that is not a git checkout)")
    rec.add_argument("--python", default=sys.executable, help="interpreter of the venv with tunekit's "
                                                              "dependencies (default: this one)")
    cmp_ = sub.add_parser("compare", help="print every difference between two recordings; exit 1 if any")
    cmp_.add_argument("a")
    cmp_.add_argument("b")
    args = parser.parse_args()
    return cmd_record(args) if args.command == "record" else cmd_compare(args)


if __name__ == "__main__":
    raise SystemExit(main())
