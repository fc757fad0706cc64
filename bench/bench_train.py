"""Training throughput and memory of `tunekit train`, measured through the real trainer.

    python bench/bench_train.py                      # CPU: tiny + musicgen-small-shaped, LoRA vs full, 5 s clips
    python bench/bench_train.py --device cuda        # GPU: musicgen-small/-medium shapes, 30 s clips, batch sweep
    python bench/bench_train.py --models small --methods lora --steps 4 --json out.json

Models have random weights in the real architectures (a saved checkpoint folder the trainer loads like any
local MusicGen): `tiny` is the tiny test model; `small` is musicgen-small's decoder (24 layers x 1024, 16
heads) with a T5-base-shaped text encoder; `medium` is musicgen-medium's (48 x 1536, 24 heads). Each
configuration runs in its own process so peak memory is its own. Reported: tokens/s (trained target tokens
over step wall time, first step excluded as warm-up), seconds per step, the fraction of step time spent
waiting for data, peak host RSS, peak GPU memory (cuda), and the pre-flight estimate for comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHAPES = {
    # decoder layers, hidden, heads, ffn; text encoder (T5) layers, d_model, heads, d_ff
    "small": dict(layers=24, hidden=1024, heads=16, ffn=4096, t5_layers=12, t5_d=768, t5_heads=12, t5_ff=3072),
    "medium": dict(layers=48, hidden=1536, heads=24, ffn=6144, t5_layers=12, t5_d=768, t5_heads=12, t5_ff=3072),
}


def write_dataset(root: Path, seconds: float, n_windows: int = 64) -> Path:
    """A prepared dataset in the prep output contract with random EnCodec-like codes (4 x 2048 at 50 Hz)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    frames = int(seconds * 50)
    (root / "tokens" / "bench").mkdir(parents=True, exist_ok=True)
    rows = []
    for t in range(8):
        tid = f"trk_{t:012x}"
        per_track = n_windows // 8
        codes = rng.integers(0, 2048, (per_track * frames, 4)).astype(np.uint16)
        np.save(root / "tokens" / "bench" / f"{tid}.npy", codes)
        for w in range(per_track):
            rows.append({
                "window_id": f"{tid}_{w:04d}", "track_id": tid, "split": "valid" if t == 7 else "train",
                "caption": "lofi hip hop with piano", "captions": ["lofi hip hop with piano", "a calm beat", "piano"],
                "tokens_path": f"tokens/bench/{tid}.npy", "tokens_offset": w * frames, "tokens_frames": frames,
                "tokens_codec": "facebook/encodec_32khz", "tokens_codec_hash": "bench", "tokens_frame_rate": 50.0,
                "tokens_streams": 4, "license": "CC0-1.0",
            })
    pq.write_table(pa.Table.from_pylist(rows), root / "windows.parquet")
    return root


def build_shaped_model(shape: str, out: Path) -> Path:
    """Save a random-weight MusicGen with the real decoder (and T5-base) shape, reusing the tiny model's
    tokenizer and codec, as a checkpoint folder `load_musicgen` reads."""
    import shutil

    import torch
    from transformers import MusicgenConfig, MusicgenForConditionalGeneration

    from tunekit.models.registry import resolve

    tiny = Path(resolve("facebook/musicgen-small", tiny=True))
    cfg = MusicgenConfig.from_pretrained(tiny)
    s = SHAPES[shape]
    dec = cfg.decoder
    dec.num_hidden_layers, dec.hidden_size = s["layers"], s["hidden"]
    dec.num_attention_heads, dec.ffn_dim = s["heads"], s["ffn"]
    te = cfg.text_encoder
    te.num_layers, te.d_model, te.num_heads, te.d_ff, te.d_kv = s["t5_layers"], s["t5_d"], s["t5_heads"], s["t5_ff"], 64
    torch.manual_seed(0)
    model = MusicgenForConditionalGeneration(cfg)
    model.save_pretrained(out)
    for f in tiny.iterdir():
        own = ("config.json", "generation_config.json")
        weights_or_config = f.name in own or f.name.startswith(("model", "tunekit"))
        if f.is_file() and not weights_or_config:  # tokenizer and feature-extractor files
            shutil.copy(f, out / f.name)
    return out


def child(spec: dict) -> dict:
    """Run one configuration in this process; returns its measurements."""
    import torch

    from tunekit.config.compose import load_config
    from tunekit.train.config import TrainConfig
    from tunekit.train.run import run_train

    overrides = [
        f"data.path={spec['data']}", f"out={spec['out']}", f"model.name={spec['model']}",
        f"models.tiny={str(spec['tiny']).lower()}", f"method={spec['method']}", "logger=none",
        f"trainer.device={spec['device']}", f"trainer.precision={spec['precision']}",
        f"trainer.batch_size={spec['batch']}", "trainer.grad_accum=1", f"trainer.max_steps={spec['steps']}",
        "trainer.eval_every=0", f"trainer.save_every={spec['steps'] + 1}", "trainer.log_every=1000", "eval.n_prompts=0",
        f"data.crop_seconds={spec['seconds']}", f"model.gradient_checkpointing={str(spec['ckpt']).lower()}",
        f"data.num_workers={spec['workers']}",
    ]
    cfg = load_config("train", overrides, TrainConfig)
    t0 = time.perf_counter()
    run_train(cfg)
    wall = time.perf_counter() - t0
    rows = [json.loads(line) for line in (Path(spec["out"]) / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "step_s" in r]
    steady = rows[1:] if len(rows) > 1 else rows
    step_s = float(np.mean([r["step_s"] for r in steady]))
    result = {
        "tokens_per_s": sum(r["tokens"] for r in steady) / sum(r["step_s"] for r in steady),
        "s_per_step": step_s,
        "data_wait_frac": sum(r["data_s"] for r in steady) / sum(r["step_s"] for r in steady),
        "rss_peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "wall_s": wall,
    }
    if spec["device"] == "cuda":
        result["gpu_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
        result["gpu_name"] = torch.cuda.get_device_name()
    return result


def model_counts(model_name: str, tiny: bool) -> dict:
    """Shape and parameter counts (trainable for LoRA and full) the pre-flight estimate needs, from one load."""
    import copy

    from tunekit.models.musicgen import load_musicgen
    from tunekit.train.lora import apply_lora, count_parameters, unfreeze_decoder
    from tunekit.train.musicgen import model_shape

    model, _ = load_musicgen(model_name, tiny=tiny)
    shape = model_shape(model, 256)
    on_device = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("audio_encoder"))
    unfreeze_decoder(model)
    full = count_parameters(model)[0]
    lora = count_parameters(apply_lora(copy.deepcopy(model), 16, 16.0, 0.05, "attention_ffn"))[0]
    return {"shape": shape, "on_device": on_device, "trainable": {"full": full, "lora": lora}}


def estimate(counts: dict, spec: dict) -> dict:
    """The trainer's pre-flight memory estimate for this configuration."""
    from tunekit.train.preflight import estimate_memory

    shape = counts["shape"]
    trainable = counts["trainable"][spec["method"]]
    seq = int(spec["seconds"] * 50) + shape.max_delay
    mem = estimate_memory(shape, params_on_device=counts["on_device"], trainable=trainable, batch=spec["batch"],
                          seq=seq, text_len=8, mixed=spec["precision"] != "fp32", checkpointing=spec["ckpt"], ema=False,
                          overhead_gib=1.0 if spec["device"] == "cuda" else 0.5)
    return {"trainable": trainable, "estimate_gib": mem["total_gib"]}


def run_child(spec: dict, threads: int | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, __file__, "--child", json.dumps(spec)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    for line in proc.stdout.splitlines()[::-1]:
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (proc.stdout + proc.stderr)[-1500:]
    return {"error": tail.strip().splitlines()[-1] if tail.strip() else f"exit {proc.returncode}", "log": tail}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--models", default=None, help="comma list of tiny, small, medium")
    ap.add_argument("--methods", default="lora,full")
    ap.add_argument("--seconds", type=float, default=None, help="clip length (default 5 on cpu, 30 on cuda)")
    ap.add_argument("--batches", default=None, help="comma list of batch sizes (default 1 on cpu; 1,2,4 on cuda)")
    ap.add_argument("--steps", type=int, default=None, help="steps per configuration (first one is warm-up)")
    ap.add_argument("--ckpt", default="false", help="gradient checkpointing: false, true or both")
    ap.add_argument("--workers", type=int, default=0, help="data.num_workers")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (OMP_NUM_THREADS) per run")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(json.loads(args.child))), flush=True)
        return
    cuda = args.device == "cuda"
    models = (args.models or ("small,medium" if cuda else "tiny,small")).split(",")
    seconds = args.seconds or (30.0 if cuda else 5.0)
    batches = [int(b) for b in (args.batches or ("1,2,4" if cuda else "1")).split(",")]
    ckpts = {"false": [False], "true": [True], "both": [False, True]}[args.ckpt]
    precision = "bf16" if cuda else "fp32"
    work = Path(tempfile.mkdtemp(prefix="tunekit-bench-"))
    data = write_dataset(work / "data", seconds)
    results = []
    import torch

    threads = args.threads or torch.get_num_threads()
    print(f"device={args.device} clip={seconds:g}s precision={precision} torch threads={threads} "
          f"cores={os.cpu_count()} load average={os.getloadavg()[0]:.1f}")
    for name in models:
        tiny = name == "tiny"
        model = "facebook/musicgen-small" if tiny else str(build_shaped_model(name, work / f"model-{name}"))
        steps = args.steps or (12 if tiny else (6 if cuda else 3))
        counts = model_counts(model, tiny)
        for method in args.methods.split(","):
            for batch in batches:
                for ckpt in ckpts:
                    spec = dict(data=str(data), out=str(work / f"run-{name}-{method}-{batch}-{ckpt}"), model=model,
                                tiny=tiny, method=method, device=args.device, precision=precision, batch=batch,
                                steps=steps, seconds=seconds, ckpt=ckpt, workers=args.workers)
                    r = run_child(spec, args.threads)
                    r.update(estimate(counts, spec))
                    r.update(model=name, method=method, batch=batch, ckpt=ckpt, seconds=seconds)
                    results.append(r)
                    if "error" in r:
                        print(f"{name:6} {method:4} b={batch} ckpt={ckpt!s:5}  FAILED: {r['error']}", flush=True)
                        continue
                    gpu = f"  gpu {r['gpu_peak_gib']:.2f} GiB" if "gpu_peak_gib" in r else ""
                    print(f"{name:6} {method:4} b={batch} ckpt={ckpt!s:5}  {r['tokens_per_s']:9.0f} tok/s  "
                          f"{r['s_per_step']:7.2f} s/step  data {100 * r['data_wait_frac']:4.1f}%  "
                          f"rss {r['rss_peak_gib']:.2f} GiB{gpu}  (estimate {r['estimate_gib']:.2f} GiB, "
                          f"{r['trainable'] / 1e6:.2f}M trainable)", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
