"""Builders shared by the training tests: a small prepared dataset in the prep contract's exact layout
(windows.parquet, tracks.parquet, per-track uint16 token files, audio, summary, attribution) and config
composition for `tunekit train` / `tunekit generate`."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FRAME_RATE = 50.0
WORK_RATE = 44100
CAPTIONS = [
    "lofi hip hop with piano and soft drums",
    "dark ambient drone with warm pads",
    "upbeat electronic track with synth bass",
    "calm acoustic guitar melody",
    "cinematic strings and brass",
    "jazz groove with saxophone",
]


def synth_track(i: int, seconds: float, rate: int = WORK_RATE) -> np.ndarray:
    """Stereo (2, N) float32: a two-note chord whose pitch depends on the track index."""
    t = np.arange(int(seconds * rate)) / rate
    f0 = 110.0 * 2 ** (i / 12)
    mono = 0.3 * np.sin(2 * np.pi * f0 * t) + 0.2 * np.sin(2 * np.pi * 1.5 * f0 * t)
    return np.stack([mono, 0.9 * mono]).astype(np.float32)


def make_dataset(
    root: Path,
    *,
    tracks: tuple[str, ...] = ("train", "train", "train", "train", "valid", "test"),
    window_seconds: float = 2.0,
    windows_per_track: int = 2,
    last_partial: float | None = 1.0,
    codes: str = "random",
    n_streams: int = 4,
    with_tokens: bool = True,
    seed: int = 0,
) -> Path:
    """Write a prepared dataset in the prep output contract.

    `codes`: 'random', or 'motif' (a repeating random motif per track: structure a model can learn quickly).
    Audio is written too (melody models read it for chroma).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    import soundfile as sf

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    fingerprint = "tinyencodec0123456789"
    token_dir = root / "tokens" / fingerprint[:12]
    token_dir.mkdir(parents=True, exist_ok=True)
    (root / "audio").mkdir(exist_ok=True)
    wrows: list[dict[str, Any]] = []
    trows: list[dict[str, Any]] = []
    for i, split in enumerate(tracks):
        tid = f"trk_{i:012x}"
        durations = [window_seconds] * windows_per_track + ([last_partial] if last_partial else [])
        total = sum(durations)
        audio = synth_track(i, total)
        audio_rel = f"audio/{tid}.flac"
        sf.write(str(root / audio_rel), audio.T, WORK_RATE, subtype="PCM_24")
        trows.append({
            "track_id": tid, "source_path": f"{tid}.wav", "status": "ok", "reason": None,
            "license": "CC-BY-4.0" if i % 2 == 0 else "CC0-1.0", "artist": f"Artist {i}", "title": f"Track {i}",
            "duration_s": total, "split": split, "audio_path": audio_rel,
            "attribution": f"Track {i} by Artist {i} (CC BY 4.0)" if i % 2 == 0 else "",
        })
        if codes == "motif":  # a repeating 8-frame motif per track: structure a model can learn quickly
            motif = rng.integers(0, 2048, size=(8, n_streams))
            all_codes = np.tile(motif, (int(total * FRAME_RATE) // 8 + 2, 1)).astype(np.uint16)
        else:
            all_codes = rng.integers(0, 2048, size=(int(round(total * FRAME_RATE)) + 2, n_streams)).astype(np.uint16)
        stored, offset_s = [], 0.0
        for w, dur in enumerate(durations):
            start = int(round(offset_s * FRAME_RATE))
            n = int(round(dur * FRAME_RATE))
            stored.append(all_codes[start : start + n])
            caps = [f"{CAPTIONS[i % len(CAPTIONS)]}, variant {v}" for v in range(3)]
            row = {
                "window_id": f"{tid}_{w:04d}", "track_id": tid, "audio_path": audio_rel, "offset_s": offset_s,
                "duration_s": dur, "start_s": offset_s, "license": trows[-1]["license"], "split": split,
                "caption": caps[0], "captions": caps,
            }
            if with_tokens:
                row.update({
                    "tokens_path": f"tokens/{fingerprint[:12]}/{tid}.npy",
                    "tokens_offset": sum(len(s) for s in stored[:-1]),
                    "tokens_frames": n, "tokens_codec": "facebook/encodec_32khz", "tokens_codec_hash": fingerprint,
                    "tokens_frame_rate": FRAME_RATE, "tokens_streams": n_streams,
                })
            wrows.append(row)
            offset_s += dur
        if with_tokens:
            np.save(token_dir / f"{tid}.npy", np.concatenate(stored, axis=0))
    pq.write_table(pa.Table.from_pylist(wrows), root / "windows.parquet")
    pq.write_table(pa.Table.from_pylist(trows), root / "tracks.parquet")
    summary = {"counts": {"ok": len(tracks)}, "config": {"pipeline_name": "musicgen"}}  # as prep writes it
    (root / "summary.json").write_text(json.dumps(summary))
    with open(root / "attribution.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["track_id", "title", "artist", "license", "credit"])
        w.writeheader()
        for t in trows:
            if t["attribution"]:  # prep lists the tracks whose licence asks for credit
                w.writerow({"track_id": t["track_id"], "title": t["title"], "artist": t["artist"],
                            "license": t["license"], "credit": t["attribution"]})
    return root


BASE = [
    "models=tiny",
    "logger=none",
    "trainer.device=cpu",
    "trainer.precision=fp32",
    "data.crop_seconds=2",
    "trainer.batch_size=2",
    "trainer.grad_accum=1",
    "trainer.max_steps=4",
    "trainer.warmup=0",
    "trainer.eval_every=0",
    "trainer.save_every=0",
    "trainer.log_every=1",
    "eval.n_prompts=0",
]


def train_cfg(data: Path, out: Path, *overrides: str) -> Any:
    """A validated TrainConfig for a tiny CPU run on `data`, written to `out`."""
    from tunekit.config.compose import load_config
    from tunekit.train.config import TrainConfig

    return load_config("train", [*BASE, f"data.path={data}", f"out={out}", *overrides], TrainConfig)


def generate_cfg(*overrides: str) -> Any:
    """A validated GenerateConfig."""
    from tunekit.config.compose import load_config
    from tunekit.generate import GenerateConfig

    return load_config("generate", list(overrides), GenerateConfig)


def child_env() -> dict[str, str]:
    """Environment for child processes: this checkout first on the path, one thread per process."""
    path = os.pathsep.join([str(REPO / "tests"), str(REPO / "src")])
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


def train_process(data: Path, out: Path, *overrides: str) -> subprocess.Popen:
    """`run_train` in a child process (as the CLI would run it), for kill-and-resume tests."""
    return subprocess.Popen(
        [sys.executable, __file__, str(data), str(out), *overrides],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=child_env(), text=True,
    )


def torchrun(nproc: int, data: Path, out: Path, *overrides: str) -> subprocess.CompletedProcess:
    """`run_train` on `nproc` CPU processes (DDP over gloo), launched by torchrun."""
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
         __file__, str(data), str(out), *overrides],
        capture_output=True, env=child_env(), text=True,
    )


if __name__ == "__main__":
    from tunekit.train.run import run_train

    raise SystemExit(run_train(train_cfg(Path(sys.argv[1]), Path(sys.argv[2]), *sys.argv[3:])))
