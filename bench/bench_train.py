"""Training throughput and memory of `tunekit train`, measured through the real trainer.

    python bench/bench_train.py                      # CPU: tiny + musicgen-small-shaped, LoRA vs full, 5 s clips
    python bench/bench_train.py --device cuda        # GPU: musicgen-small/-medium shapes, 30 s clips, batch sweep
    python bench/bench_train.py --models small --methods lora --steps 4 --json out.json
    python bench/bench_train.py --models small --methods lora --targets all --seconds 10 --batches 2 \
        --steps 3 --threads 1 --repeats 3            # the musicgen-dreamboothing comparison (docs/benchmarks.md)

Models have random weights in the real architectures (a saved checkpoint folder the trainer loads like any
local MusicGen): `tiny` is the tiny test model; `small` is musicgen-small's decoder (24 layers x 1024, 16
heads) with a T5-base-shaped text encoder; `medium` is musicgen-medium's (48 x 1536, 24 heads). Each
configuration runs in its own process so peak memory is its own; with --repeats the configurations run in
rounds (interleaved) and the medians are reported. Reported: tokens/s (trained target tokens over step wall
time, first step excluded as warm-up), seconds and CPU seconds per step, the fraction of step time spent
waiting for data, peak host RSS of the whole process and of each step, peak GPU memory (cuda), and the
pre-flight estimate for comparison."""

from __future__ import annotations

import argparse
import json
import os
import shutil
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


def overrides(spec: dict) -> list[str]:
    """`tunekit train` overrides of one configuration (no validation, no checkpoints before the last step),
    after the spec's own `base_overrides` when it has them (another family's `model=` group, say)."""
    return list(spec.get("base_overrides", [])) + [
        f"data.path={spec['data']}", f"out={spec['out']}", f"model.name={spec['model']}",
        f"models.tiny={str(spec['tiny']).lower()}", f"method={spec['method']}", "logger=none",
        f"trainer.device={spec['device']}", f"trainer.precision={spec['precision']}",
        f"trainer.batch_size={spec['batch']}", "trainer.grad_accum=1", f"trainer.max_steps={spec['steps']}",
        "trainer.eval_every=0", f"trainer.save_every={spec['steps'] + 1}", "trainer.log_every=1000", "eval.n_prompts=0",
        f"data.crop_seconds={spec['seconds']}", f"model.gradient_checkpointing={str(spec['ckpt']).lower()}",
        f"data.num_workers={spec['workers']}",
    ] + ([f"method.targets={spec['targets']}"] if spec["method"] == "lora" else [])


def child(spec: dict) -> dict:
    """Run one configuration in this process; returns its measurements, per step and overall."""
    import torch

    from tunekit.config.compose import load_config
    from tunekit.train.config import TrainConfig
    from tunekit.train.metrics import process_rss_peak_gib
    from tunekit.train.run import run_train

    cfg = load_config("train", overrides(spec), TrainConfig)
    t0 = time.perf_counter()
    run_train(cfg)
    wall = time.perf_counter() - t0
    rows = [json.loads(line) for line in (Path(spec["out"]) / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "step_s" in r]
    steady = rows[1:] if len(rows) > 1 else rows
    result = {
        "tokens_per_s": sum(r["tokens"] for r in steady) / sum(r["step_s"] for r in steady),
        "s_per_step": float(np.mean([r["step_s"] for r in steady])),
        "cpu_s_per_step": float(np.mean([r["cpu_s"] for r in steady])),
        "data_wait_frac": sum(r["data_s"] for r in steady) / sum(r["step_s"] for r in steady),
        "rss_peak_by_step": [r["rss_peak_gib"] for r in rows],
        "rss_peak_gib": process_rss_peak_gib(),  # the whole process, model loading included
        "wall_s": wall,
    }
    if spec["device"] == "cuda":
        result["gpu_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
        result["gpu_name"] = torch.cuda.get_device_name()
    return result


def model_counts(model_name: str, tiny: bool, targets: str) -> dict:
    """Shape and parameter counts (held in host memory, on the device, trainable) the pre-flight estimate needs."""
    import copy

    from tunekit.models.musicgen import load_musicgen
    from tunekit.train.lora import apply_lora, count_parameters, unfreeze_decoder
    from tunekit.train.musicgen import model_shape

    model, _ = load_musicgen(model_name, tiny=tiny)
    shape = model_shape(model, 256)
    on_device = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("audio_encoder"))
    lora_trainable, lora_total = count_parameters(apply_lora(copy.deepcopy(model), 16, 16.0, 0.05, targets))
    unfreeze_decoder(model)
    full_trainable, full_total = count_parameters(model)
    return {"shape": shape, "on_device": on_device, "trainable": {"full": full_trainable, "lora": lora_trainable},
            "host": {"full": full_total, "lora": lora_total}}


def estimate(counts: dict, spec: dict) -> dict:
    """The trainer's pre-flight memory estimate for this configuration (the same function, the same config)."""
    import torch

    from tunekit.config.compose import load_config
    from tunekit.train.config import TrainConfig
    from tunekit.train.preflight import plan_memory

    cfg = load_config("train", overrides(spec), TrainConfig)
    trainable = counts["trainable"][spec["method"]]
    on_device = counts["host"][spec["method"]] if spec["device"] == "cpu" else counts["on_device"]
    mem = plan_memory(cfg, counts["shape"], trainable=trainable, on_device=on_device, precision=spec["precision"],
                      device=torch.device(spec["device"]))
    return {"trainable": trainable, "estimate_gib": mem["total_gib"]}


def run_child(spec: dict, threads: int | None = None, script: str | Path = __file__) -> dict:
    """Run `script --child <spec>` in a fresh process (so its peak memory is its own) and return the
    measurements it prints on its `RESULT ` line, or {"error": last line, "log": tail} when it failed."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, str(script), "--child", json.dumps(spec)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    for line in proc.stdout.splitlines()[::-1]:
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (proc.stdout + proc.stderr)[-1500:]
    return {"error": tail.strip().splitlines()[-1] if tail.strip() else f"exit {proc.returncode}", "log": tail}


def summarise(runs: list[dict]) -> dict:
    """Medians over the repeats of one configuration (per-step peaks: median of each step)."""
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return runs[0]
    out = {k: float(np.median([r[k] for r in ok])) for k, v in ok[0].items() if isinstance(v, (int, float))}
    steps = min(len(r["rss_peak_by_step"]) for r in ok)
    out["rss_peak_by_step"] = [float(np.median([r["rss_peak_by_step"][i] for r in ok])) for i in range(steps)]
    out["repeats"] = len(ok)
    out.update({k: v for k, v in ok[0].items() if isinstance(v, str)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--models", default=None, help="comma list of tiny, small, medium")
    ap.add_argument("--methods", default="lora,full")
    ap.add_argument("--targets", default="attention_ffn", help="LoRA target preset: attention, attention_ffn, all")
    ap.add_argument("--seconds", type=float, default=None, help="clip length (default 5 on cpu, 30 on cuda)")
    ap.add_argument("--batches", default=None, help="comma list of batch sizes (default 1 on cpu; 1,2,4 on cuda)")
    ap.add_argument("--steps", type=int, default=None, help="steps per configuration (first one is warm-up)")
    ap.add_argument("--ckpt", default="false", help="gradient checkpointing: false, true or both")
    ap.add_argument("--workers", type=int, default=0, help="data.num_workers")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (OMP_NUM_THREADS) per run")
    ap.add_argument("--repeats", type=int, default=1, help="run every configuration this many times, interleaved; "
                                                            "report medians")
    ap.add_argument("--work", default=None, help="folder for the data set and built models, reused when present "
                                                 "(default: a new temporary folder)")
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
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="tunekit-bench-"))
    data = work / f"data-{seconds:g}s"
    if not (data / "windows.parquet").is_file():
        write_dataset(data, seconds)
    import torch

    threads = args.threads or torch.get_num_threads()
    print(f"device={args.device} clip={seconds:g}s precision={precision} torch threads={threads} "
          f"cores={os.cpu_count()} load average={os.getloadavg()[0]:.1f} repeats={args.repeats}")
    specs, counts = [], {}
    for name in models:
        tiny = name == "tiny"
        model = "facebook/musicgen-small" if tiny else str(work / f"model-{name}")
        if not tiny and not any((work / f"model-{name}").glob("model*.safetensors*")):
            build_shaped_model(name, work / f"model-{name}")
        counts[name] = model_counts(model, tiny, args.targets)
        steps = args.steps or (12 if tiny else (6 if cuda else 3))
        for method in args.methods.split(","):
            for batch in batches:
                for ckpt in ckpts:
                    specs.append(dict(
                        name=name, data=str(data), out=str(work / f"run-{name}-{method}-{batch}-{ckpt}"), model=model,
                        tiny=tiny, method=method, targets=args.targets, device=args.device, precision=precision,
                        batch=batch, steps=steps, seconds=seconds, ckpt=ckpt, workers=args.workers,
                    ))
    runs: list[list[dict]] = [[] for _ in specs]
    for repeat in range(args.repeats):  # interleaved: every configuration once per round
        for i, spec in enumerate(specs):
            shutil.rmtree(spec["out"], ignore_errors=True)
            runs[i].append(run_child(spec, args.threads))
    results = []
    for spec, spec_runs in zip(specs, runs):
        r = summarise(spec_runs)
        r.update(estimate(counts[spec["name"]], spec))
        r.update(model=spec["name"], method=spec["method"], batch=spec["batch"], ckpt=spec["ckpt"], seconds=seconds,
                 targets=spec["targets"] if spec["method"] == "lora" else None, runs=spec_runs)
        results.append(r)
        head = f"{spec['name']:6} {spec['method']:4} b={spec['batch']} ckpt={spec['ckpt']!s:5}"
        if "error" in r:
            print(f"{head}  FAILED: {r['error']}", flush=True)
            continue
        gpu = f"  gpu {r['gpu_peak_gib']:.2f} GiB" if "gpu_peak_gib" in r else ""
        per_step = " ".join(f"{x:.2f}" for x in r["rss_peak_by_step"])
        print(f"{head}  {r['tokens_per_s']:9.0f} tok/s  {r['s_per_step']:7.2f} s/step  {r['cpu_s_per_step']:7.2f} "
              f"cpu s/step  data {100 * r['data_wait_frac']:4.1f}%  rss {r['rss_peak_gib']:.2f} GiB{gpu}  "
              f"(estimate {r['estimate_gib']:.2f} GiB, {r['trainable'] / 1e6:.2f}M trainable)  "
              f"peak rss by step: {per_step} GiB", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
