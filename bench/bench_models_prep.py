"""Throughput of the model prep stages on their real architectures (random weights: same cost as trained).

    .venv/bin/python bench/bench_models_prep.py                    # CPU: Demucs (10 s clip) and EnCodec 32 kHz
    .venv/bin/python bench/bench_models_prep.py --device cuda      # the same on a GPU (batched segments/windows)
    .venv/bin/python bench/bench_models_prep.py --rss 3 20         # peak RSS of streamed separation, tiny model

Demucs is `HTDemucs` with the class's default hyper-parameters (48 channels, depth 4, 5 transformer
layers) and htdemucs's 7.8 s segment, run through `tunekit.prep.separate.separate`. EnCodec is
`EncodecModel` with facebook/encodec_32khz's configuration, run through `encode_windows` on 30 s
windows at 44.1 kHz (soxr resampling included). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

RATE = 44100
SOURCES = ["drums", "bass", "other", "vocals"]



def music(seconds: float, seed: int = 0) -> np.ndarray:
    """Stereo test audio: two tones with a gated third and a little noise, (2, N) float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    x = 0.3 * np.sin(2 * np.pi * 110 * t) + 0.2 * np.sin(2 * np.pi * 440 * t) * (t % 0.5 < 0.25)
    return (np.stack([x, 0.9 * x]) + 0.03 * rng.standard_normal((2, t.size))).astype(np.float32)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def bench_demucs(seconds: float, device: str, batch_segments: int) -> dict[str, object]:
    import torch
    from demucs.htdemucs import HTDemucs

    from tunekit.prep.separate import SeparateConfig, separate

    torch.manual_seed(0)
    model = HTDemucs(sources=SOURCES, segment=Fraction(39, 5)).eval().to(device)
    params = sum(p.numel() for p in model.parameters())
    cfg = SeparateConfig(batch_segments=batch_segments, device=device)
    separate(music(1.0), model, cfg)  # warm-up: allocator, FFT plans (one full segment forward)
    mix = music(seconds, seed=1)
    _sync(device)
    t0 = time.perf_counter()
    separate(mix, model, cfg)
    _sync(device)
    wall = time.perf_counter() - t0
    seg = float(model.segment)
    stride = 0.75 * seg
    segments = int(np.ceil(seconds / stride))
    per_segment = wall / segments
    return {
        "model": f"HTDemucs (htdemucs shape, {params / 1e6:.1f}M params)", "device": device,
        "audio": f"{seconds:g} s stereo 44.1 kHz", "segments": segments, "wall_s": wall,
        "x_realtime": seconds / wall, "long_track_x_realtime": stride / per_segment,
    }


def bench_encodec(windows: int, device: str, batch_size: int) -> dict[str, object]:
    import torch
    from transformers import EncodecConfig, EncodecFeatureExtractor, EncodecModel

    from tunekit.models.encodec import ENCODEC_32KHZ

    from tunekit.prep.tokens import TokensConfig, encode_windows

    torch.manual_seed(0)
    model = EncodecModel(EncodecConfig(**ENCODEC_32KHZ)).eval().to(device)
    params = sum(p.numel() for p in model.parameters())
    fe = EncodecFeatureExtractor(feature_size=1, sampling_rate=32000)
    cfg = TokensConfig(batch_size=batch_size, device=device)
    encode_windows([music(2.0)], RATE, model, fe, cfg)  # warm-up
    audio = [music(30.0, seed=i) for i in range(windows)]
    _sync(device)
    t0 = time.perf_counter()
    codes = encode_windows(audio, RATE, model, fe, cfg)
    _sync(device)
    wall = time.perf_counter() - t0
    assert codes[0].shape == (1500, 4)
    return {
        "model": f"EncodecModel (encodec_32khz shape, {params / 1e6:.1f}M params)", "device": device,
        "audio": f"{windows} x 30 s windows", "segments": f"batch {batch_size}", "wall_s": wall,
        "x_realtime": 30.0 * windows / wall, "long_track_x_realtime": 30.0 * windows / wall,
    }


def table(rows: list[dict[str, object]]) -> str:
    lines = ["| model | device | audio | segments/batch | wall s | x real time | long tracks x real time |",
             "|---|---|---|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['device']} | {r['audio']} | {r['segments']} | {r['wall_s']:.1f} | "
                     f"{r['x_realtime']:.2f} | {r['long_track_x_realtime']:.2f} |")
    return "\n".join(lines)


# -- peak memory of streamed separation ---------------------------------------------------------


def _vm_hwm_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def rss_child(minutes: float, mode: str, workdir: str) -> None:
    """Separate a `minutes` long float WAV with the tiny htdemucs; print peak RSS (run in a fresh process)."""
    import soundfile as sf

    from tunekit.models.demucs import load_demucs
    from tunekit.prep.separate import SeparateConfig, separate, separate_file

    src = Path(workdir) / f"mix_{minutes:g}.wav"
    n = int(minutes * 60 * RATE)
    with sf.SoundFile(str(src), "w", RATE, 2, subtype="FLOAT") as f:
        for start in range(0, n, 30 * RATE):
            f.write(music(min(30.0, (n - start) / RATE), seed=start).T)
    model = load_demucs("htdemucs", tiny=True)
    base = _vm_hwm_mb()
    t0 = time.perf_counter()
    if mode == "stream":
        separate_file(src, Path(workdir) / "inst.wav", model, SeparateConfig(batch_segments=4))
    else:
        audio, _ = sf.read(str(src), dtype="float32", always_2d=True)
        separate(np.ascontiguousarray(audio.T), model, SeparateConfig(batch_segments=4), keep_vocals=False)
    print(f"{minutes:g} {mode} {base:.0f} {_vm_hwm_mb():.0f} {time.perf_counter() - t0:.1f}")


def bench_rss(minutes: list[float], modes: list[str], threads: int | None) -> str:
    lines = ["| track | mode | RSS before (MB) | peak RSS (MB) | wall s |", "|---:|---|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as tmp:
        for mode in modes:
            for m in minutes:
                cmd = [sys.executable, __file__, "--rss-child", str(m), mode, tmp]
                cmd += ["--threads", str(threads)] if threads else []
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.split()
                lines.append(f"| {out[0]} min | {out[1]} | {out[2]} | {out[3]} | {out[4]} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu | cuda")
    parser.add_argument("--seconds", type=float, default=10.0, help="Demucs clip length (s)")
    parser.add_argument("--windows", type=int, default=2, help="EnCodec: number of 30 s windows")
    parser.add_argument("--batch", type=int, default=None, help="segments/windows per forward (default: 1 cpu, 8 cuda)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--only", choices=["demucs", "encodec"], default=None)
    parser.add_argument("--rss", type=float, nargs="*", default=None, help="track minutes for the RSS measurement")
    parser.add_argument("--rss-modes", nargs="*", default=["stream"], help="stream (file to file) | memory")
    parser.add_argument("--rss-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.rss_child:
        rss_child(float(args.rss_child[0]), args.rss_child[1], args.rss_child[2])
        return
    if args.rss is not None:
        print(bench_rss(args.rss or [3.0, 20.0], args.rss_modes, args.threads))
        return
    batch = args.batch or (8 if args.device.startswith("cuda") else 1)
    rows = []
    if args.only in (None, "demucs"):
        rows.append(bench_demucs(args.seconds, args.device, batch))
    if args.only in (None, "encodec"):
        rows.append(bench_encodec(args.windows, args.device, batch))
    print(f"torch threads: {torch.get_num_threads()}, cpu count: {os.cpu_count()}\n")
    print(table(rows))


if __name__ == "__main__":
    main()
