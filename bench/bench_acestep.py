"""ACE-Step 1.5 training throughput and memory, measured through the real trainer (`tunekit train
model=acestep-1.5-turbo`) on prepared latents.

    python bench/bench_acestep.py                    # CPU: tiny and real-width 2-layer DiT, LoRA vs full, 10 s
                                                     # clips, and the real-width LoRA step with the encoders resident
    python bench/bench_acestep.py --device cuda      # GPU: the real DiT at full depth, LoRA, bf16 autocast, 30 s and
                                                     # 120 s clips, checkpointing off and on, tokens/s and MFU
    python bench/bench_acestep.py --models wide --methods lora --steps 3 --repeats 3 --threads 1 --json out.json

Models (random weights, the real classes, built from a config; nothing is downloaded):
  tiny  the `models=tiny` ACE-Step turbo pipeline (DiT hidden 64, 2 layers, 8 latent channels);
  wide  the real DiT's width (diffusers' AceStepTransformer1DModel defaults, which are ACE-Step 1.5's: hidden 2048,
        16 heads / 8 kv of 128, MLP 6144, patch 2, 192 input channels, 64 latent channels) with --layers layers
        (default 2 of 24);
  real  the real DiT config at full depth (24 layers, 1.58 B parameters);
  xl    the DiT shape third-party loaders report for the acestep-v15-xl-* checkpoints (hidden 2560, 32 layers,
        32 heads / 8 kv of 128, MLP 9728, conditions of width 2048; about 4.2 B parameters), not verified here.
A built DiT is saved in bf16 (as diffusers' ACE-Step converter writes the published checkpoints) into a
pipeline folder holding model_index.json and transformer/ only: the trainer loads the DiT alone.

Data: a prep output in the contract of `tunekit prep pipeline=acestep` (data/README.md) with random latents
(mean and std per window) and random conditions of --cond-tokens tokens, every window one clip long, so every
step trains one whole window (batch 1, no accumulation) as the trainer does by default.

Each configuration runs in its own process (`bench_train.run_child`, which runs `bench_train.child`: the trainer
end to end, step figures read back from metrics.jsonl) so its peak memory is its own; with --repeats the
configurations run in rounds (interleaved) and medians are reported. "Encoders resident" runs the same training
with the modules an on-the-fly trainer would also hold loaded first (`from_pretrained`, fp32, from folders saved
once in bf16): the Qwen3 text encoder, the condition encoder and the VAE, at their real configs with fewer
layers (--encoder-layers; the VAE whole), so the resident RSS each adds is measured and the full-size figure is
extrapolated from parameter counts. They only sit in memory: encoding on the fly is not timed.

Reported: DiT tokens/s (tokens = ceil(latent frames / patch) per window; first step excluded as warm-up),
seconds and CPU seconds per step, peak RSS of each step and of the whole process, peak GPU memory (cuda), the
pre-flight estimate the trainer prints, and model FLOPs per step (`dit_flops`: weight matmuls, 2 FLOPs per
multiply-add, applied to the tokens they see, plus attention scores; a full fine-tune costs 3x the forward, a
LoRA step the forward plus the gradients through the token path and attention, since frozen weights need no
weight gradients; checkpointing's recomputation is not counted; torch's FlopCounterMode count of the same step
is shown beside it as a check). On cuda, MFU = model FLOPs per second / the device's peak dense bf16 FLOPs
(spec sheet, or --peak-tflops), and the same against a bf16 matmul measured on the device.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_train  # noqa: E402  (the shared child runner, trainer overrides and medians)

MODEL_GROUP = "model=acestep-1.5-turbo"  # the trainer's ACE-Step config group (LoRA r 8, alpha 16, attention)
LATENT_RATE = 25.0  # latent frames per second of the real VAE (48 kHz / hop 1920)
SILENCE_FRAMES = 15_000  # frames of the real checkpoints' silence_latent

# DiT shapes (AceStepTransformer1DModel arguments); absent keys keep diffusers' defaults, which are ACE-Step 1.5's.
DIT_SHAPES: dict[str, dict[str, Any]] = {
    "wide": {},  # + num_hidden_layers from --layers
    "real": {},
    "xl": {"hidden_size": 2560, "intermediate_size": 9728, "num_hidden_layers": 32, "num_attention_heads": 32,
           "num_key_value_heads": 8, "head_dim": 128, "encoder_hidden_size": 2048},
}

# The encoders an on-the-fly trainer keeps resident, at their real configs (ACE-Step 1.5: Qwen3-Embedding-0.6B,
# the condition encoder at diffusers' defaults, the 48 kHz Oobleck VAE of vae/config.json).
QWEN3_EMBEDDING_06B = dict(vocab_size=151_669, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                           num_attention_heads=16, num_key_value_heads=8, head_dim=128, max_position_embeddings=32_768,
                           rope_theta=1_000_000.0, tie_word_embeddings=True)
VAE_CONFIG = dict(encoder_hidden_size=128, downsampling_ratios=[2, 4, 4, 6, 10], channel_multiples=[1, 2, 4, 8, 16],
                  decoder_channels=128, decoder_input_channels=64, audio_channels=2, sampling_rate=48_000)

# Peak dense bf16 tensor TFLOPS from NVIDIA's data sheets (no sparsity), matched against torch's device name in
# order (the first match wins). Anything else: pass --peak-tflops.
PEAK_BF16_TFLOPS: list[tuple[tuple[str, ...], float]] = [
    (("H200", "NVL"), 835.0),
    (("H200",), 989.0),  # H200 SXM
    (("H100", "PCIe"), 756.0),
    (("H100", "NVL"), 835.0),
    (("H100",), 989.0),  # H100 SXM
    (("A100",), 312.0),
    (("L40S",), 362.0),
    (("L4",), 121.0),
    (("RTX 4090",), 165.2),  # fp32 accumulation
    (("RTX 3090",), 71.0),  # fp32 accumulation
]


# ---- models and data ----------------------------------------------------------------------------------------


def dit_kwargs(shape: str, layers: int | None) -> dict[str, Any]:
    """AceStepTransformer1DModel arguments of a bench shape, as a turbo checkpoint (the config group trained)."""
    kwargs = {**DIT_SHAPES[shape], "is_turbo": True, "model_version": "turbo"}
    if shape == "wide":
        kwargs["num_hidden_layers"] = layers
    return kwargs


def build_dit_folder(shape: str, layers: int | None, out: Path) -> Path:
    """Save a random-weight DiT of `shape` into a pipeline folder the trainer loads (model_index.json +
    transformer/). Built on the GPU when there is one (initialising billions of weights on a CPU takes minutes)."""
    import torch
    from diffusers import AceStepTransformer1DModel

    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        dit = AceStepTransformer1DModel(**dit_kwargs(shape, layers))
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    dit.to(device="cpu", dtype=torch.bfloat16).save_pretrained(tmp / "transformer")
    index = {"_class_name": "AceStepPipeline", "_diffusers_version": "0.42.1",
             "transformer": ["diffusers", "AceStepTransformer1DModel"]}
    (tmp / "model_index.json").write_text(json.dumps(index, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def dit_config(model: str, tiny: bool) -> dict[str, Any]:
    """The DiT's config.json of a pipeline folder or (tiny) registry id, as diffusers saved it."""
    from tunekit.models.registry import resolve

    return json.loads((Path(resolve(model, tiny=tiny)) / "transformer" / "config.json").read_text())


def write_latent_dataset(root: Path, *, frames: int, channels: int, hidden: int, cond_tokens: int,
                         model: str, n_tracks: int = 8, per_track: int = 4) -> Path:
    """A prep output (windows.parquet, latents/<digest12>/<track>.safetensors with mean, std and cond per window,
    model.safetensors, summary.json) of random latents: `n_tracks - 1` training tracks and one validation
    track, every window `frames` latent frames with `cond_tokens` condition states of width `hidden`."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    from safetensors.torch import save_file

    rng = np.random.default_rng(0)
    digest = "bench" + "0" * 59
    folder = root / "latents" / digest[:12]
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"model": model, "digest": digest, "variant": "turbo"}
    silence = torch.from_numpy(rng.standard_normal((1, max(SILENCE_FRAMES, frames), channels), dtype=np.float32))
    save_file({"null_condition": torch.from_numpy(rng.standard_normal((1, 1, hidden), dtype=np.float32)),
               "silence_latent": silence}, str(folder / "model.safetensors"),
              metadata={**meta, "sample_rate": "48000", "latent_rate": f"{LATENT_RATE:g}", "channels": str(channels),
                        "hidden": str(hidden)})
    rows = []
    for t in range(n_tracks):
        tid = f"trk_{t:012x}"
        rel = f"latents/{digest[:12]}/{tid}.safetensors"
        tensors = {}
        for w in range(per_track):
            wid = f"{tid}_{w:04d}"
            tensors[f"{wid}/mean"] = torch.from_numpy(rng.standard_normal((frames, channels), dtype=np.float32))
            tensors[f"{wid}/std"] = torch.from_numpy(rng.uniform(0.05, 0.25, (frames, channels)).astype(np.float32))
            tensors[f"{wid}/cond"] = torch.from_numpy(rng.standard_normal((cond_tokens, hidden), dtype=np.float32))
            rows.append({"window_id": wid, "track_id": tid, "split": "valid" if t == n_tracks - 1 else "train",
                         "caption": "lofi hip hop with piano", "captions": ["lofi hip hop with piano"],
                         "lyrics": "[Instrumental]", "language": "en", "license": "CC0-1.0",
                         "offset_s": w * frames / LATENT_RATE, "duration_s": frames / LATENT_RATE,
                         "latents_file": rel, "latent_frames": frames, "cond_length": cond_tokens})
        save_file(tensors, str(root / rel), metadata=meta)
    pq.write_table(pa.Table.from_pylist(rows), root / "windows.parquet")
    (root / "summary.json").write_text(json.dumps({"pipeline": "acestep", "latents": meta}))
    return root


# ---- the encoders an on-the-fly trainer keeps resident ---------------------------------------------------------


def encoder_modules(text_layers: int | None, lyric_layers: int | None, timbre_layers: int | None,
                    meta: bool = False) -> dict[str, Any]:
    """The Qwen3 text encoder, condition encoder and VAE at their real configs with the given depths (None: the
    real depth), random weights; on the meta device (nothing allocated) when `meta`, for counting."""
    import contextlib
    import warnings

    import torch
    from diffusers import AceStepConditionEncoder, AutoencoderOobleck
    from transformers import Qwen3Config, Qwen3Model

    text = dict(QWEN3_EMBEDDING_06B)
    if text_layers is not None:
        text["num_hidden_layers"] = text_layers
    condition = {k: v for k, v in (("num_lyric_encoder_hidden_layers", lyric_layers),
                                   ("num_timbre_encoder_hidden_layers", timbre_layers)) if v is not None}
    torch.manual_seed(0)
    with torch.device("meta") if meta else contextlib.nullcontext(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*weight_norm.* is deprecated", category=FutureWarning)
        return {"text_encoder": Qwen3Model(Qwen3Config(**text)).eval(),
                "condition_encoder": AceStepConditionEncoder(**condition).eval(),
                "vae": AutoencoderOobleck(**VAE_CONFIG).eval()}


def n_params(modules: dict[str, Any]) -> dict[str, int]:
    """Parameters (and buffers: the condition encoder's silence latent is resident too) per module."""
    return {name: sum(t.numel() for t in (*m.parameters(), *m.buffers())) for name, m in modules.items()}


def build_encoders_folder(layers: tuple[int, int, int], out: Path) -> Path:
    """Save the encoders at `layers` depths (text, lyric, timbre), one folder each (text_encoder/,
    condition_encoder/, vae/ as in a pipeline folder), in bf16: half the file; loading makes float32 either way."""
    import torch

    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for name, module in encoder_modules(*layers).items():
        module.to(torch.bfloat16).save_pretrained(str(tmp / name))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def load_encoders(folder: Path) -> tuple[dict[str, Any], dict[str, float]]:
    """The encoders of `folder` loaded as a trainer encoding on the fly would load them (`from_pretrained`,
    float32 on the CPU), and the resident memory (GiB) each added."""
    import warnings

    import torch
    from diffusers import AceStepConditionEncoder, AutoencoderOobleck
    from transformers import Qwen3Model

    from tunekit.train.metrics import host_rss_gib

    classes = {"text_encoder": Qwen3Model, "condition_encoder": AceStepConditionEncoder, "vae": AutoencoderOobleck}
    modules, added = {}, {}
    for name, cls in classes.items():
        before = host_rss_gib()[0]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*weight_norm.* is deprecated", category=FutureWarning)
            modules[name] = cls.from_pretrained(str(folder / name), torch_dtype=torch.float32).eval()
        added[name] = host_rss_gib()[0] - before
    return modules, added


# ---- FLOPs --------------------------------------------------------------------------------------------------


def attended_pairs(tokens: int, window: int | None) -> int:
    """(query, key) pairs of bidirectional self-attention over `tokens`, within |i - j| <= window if given."""
    if window is None or window >= tokens - 1:
        return tokens * tokens
    i = np.arange(tokens)
    return int((np.minimum(i + window, tokens - 1) - np.maximum(i - window, 0) + 1).sum())


def dit_flops(c: dict[str, Any], *, frames: int, cond_tokens: int, batch: int, full: bool) -> dict[str, float]:
    """Model FLOPs of one training step of the DiT with config `c` on `batch` windows of `frames` latent frames
    and `cond_tokens` condition states (2 FLOPs per multiply-add).

    forward = 2 x (P_tok x T + P_cond x L + P_time) + attention, per window, where T = ceil(frames / patch) DiT
    tokens, L = condition tokens, P_tok = weights applied to every DiT token (patchify, self-attention q/k/v/o,
    cross-attention q/o, MLP, de-patchify), P_cond = weights applied to every condition token (the condition
    projection, cross-attention k/v), P_time = the two timestep embeddings (once per window), and attention =
    4 x heads x head_dim x (attended self-attention pairs: T x T on full layers, |i - j| <= sliding_window on
    sliding ones; plus T x L cross pairs) per layer. A full fine-tune's step is 3 x forward (the usual
    backward = 2 x forward). A LoRA step is forward + 2 x P_tok x T + 2 x attention: gradients flow back through
    the token path and the attention, but frozen weights need no weight gradients and the condition and timestep
    paths none at all (the adapters' own rank-r products, under 1 %, are left out). Checkpointing's recomputed
    forward is not counted. `six_nt` is the usual estimate 6 x P_tok x T, for comparison.
    """
    h, layers, ffn = c["hidden_size"], c["num_hidden_layers"], c["intermediate_size"]
    q = c["num_attention_heads"] * c["head_dim"]
    kv = c["num_key_value_heads"] * c["head_dim"]
    enc = c.get("encoder_hidden_size") or h
    patch = c["patch_size"]
    tokens = math.ceil(frames / patch)
    kinds = c.get("layer_types") or ["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(layers)]
    per_token = (c["in_channels"] * patch * h + h * c["audio_acoustic_hidden_dim"] * patch
                 + layers * (h * q + 2 * h * kv + q * h + h * q + q * h + 3 * h * ffn))
    per_cond = enc * h + layers * 2 * h * kv
    per_window = 2 * (256 * h + h * h + 6 * h * h)  # two timestep embeddings
    token_matmuls = 2 * per_token * tokens * batch
    matmul = token_matmuls + 2 * (per_cond * cond_tokens + per_window) * batch
    pairs = sum(attended_pairs(tokens, c.get("sliding_window") if k == "sliding_attention" else None) for k in kinds)
    attention = 4 * q * (pairs + layers * tokens * cond_tokens) * batch
    forward = matmul + attention
    step = 3 * forward if full else forward + token_matmuls + 2 * attention
    return {"tokens": tokens * batch, "params_per_token": per_token, "forward": forward, "step": step,
            "six_nt": 6 * per_token * tokens * batch}


def peak_tflops(name: str) -> float | None:
    """Spec-sheet dense bf16 TFLOPS of a CUDA device name, None when unknown (whole words: L4 is not L40S)."""
    for words, tflops in PEAK_BF16_TFLOPS:
        if all(re.search(rf"\b{re.escape(w)}\b", name) for w in words):
            return tflops
    return None


def measured_matmul_tflops(n: int = 8192, repeats: int = 20) -> dict[str, Any]:
    """bf16 TFLOPS of an n x n x n matmul on the GPU (median of `repeats` timed batches of 10): what the device
    reaches on the easiest workload, a practical ceiling beside the spec sheet's."""
    import torch

    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(10):
            a @ b
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1000 / 10)
    return {"matmul_tflops": 2 * n**3 / float(np.median(times)) / 1e12, "gpu_name": torch.cuda.get_device_name()}


# ---- one configuration, in its own process ---------------------------------------------------------------------


def child(spec: dict) -> dict:
    """Run one configuration (`bench_train.child`, the trainer end to end) in this process; with
    spec["encoders"] (a folder) the encoders are loaded first and stay resident until it returns."""
    from tunekit.train.metrics import host_rss_gib

    if spec.get("kind") == "build":
        build_dit_folder(spec["shape"], spec["layers"], Path(spec["out"]))
        return {"built": spec["out"]}
    if spec.get("kind") == "matmul":
        return measured_matmul_tflops()
    if spec.get("kind") == "build_encoders":
        build_encoders_folder(tuple(spec["layers"]), Path(spec["out"]))
        return {"built": spec["out"]}
    resident, extra = None, {}
    if spec.get("encoders"):
        before = host_rss_gib()[0]
        resident, added = load_encoders(Path(spec["encoders"]))
        extra = {"encoders_rss_gib": host_rss_gib()[0] - before, "encoders_params": sum(n_params(resident).values()),
                 **{f"{name}_rss_gib": gib for name, gib in added.items()}}
    result = bench_train.child(spec)
    del resident
    return {**result, **extra}


# ---- the parent: plan, run interleaved, summarise ----------------------------------------------------------------


def preflight(spec: dict, c: dict[str, Any], frames: int, cond_tokens: int) -> dict[str, Any]:
    """Trainable and total parameters (the trainer's method applied to the DiT built on the meta device) and the
    pre-flight memory estimate the trainer prints for this configuration (the same call, the same config)."""
    import torch
    from diffusers import AceStepTransformer1DModel

    from tunekit.config.compose import load_config
    from tunekit.train.acestep import PRESETS
    from tunekit.train.config import TrainConfig
    from tunekit.train.lora import count_parameters, target_regex
    from tunekit.train.methods import build_method
    from tunekit.train.preflight import dit_memory

    cfg = load_config("train", bench_train.overrides(spec), TrainConfig)
    init = {k: v for k, v in c.items() if not k.startswith("_")}
    with torch.device("meta"):
        dit = AceStepTransformer1DModel(**init)
    build_method(cfg.method).apply(dit, target_regex=functools.partial(target_regex, presets=PRESETS),
                                   trained=lambda name: True)
    trainable, total = count_parameters(dit)
    counted = counted_step_flops(dit, frames=frames, cond_tokens=cond_tokens, batch=spec["batch"])
    mem = dit_memory(cfg, hidden=c["hidden_size"], layers=c["num_hidden_layers"], ffn=c["intermediate_size"],
                     tokens=math.ceil(frames / c["patch_size"]), cond_tokens=cond_tokens, trainable=trainable,
                     on_device=total, precision=spec["precision"], device=torch.device(spec["device"]))
    return {"trainable": trainable, "dit_params": total, "estimate_gib": mem["total_gib"], "counted_flops": counted}


def counted_step_flops(dit: Any, *, frames: int, cond_tokens: int, batch: int) -> int:
    """FLOPs of one forward and backward of `dit` (on the meta device, its method applied) as torch's
    FlopCounterMode counts them from the operators' shapes: a check on `dit_flops`. It counts every matmul,
    convolution and attention the code runs, so sliding-window layers count the full T x T their masked
    attention computes, and LoRA's rank-r products are in."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    c = dit.config
    dit.train()
    with torch.device("meta"):
        x0 = torch.randn(batch, frames, c.audio_acoustic_hidden_dim)
        context = torch.randn(batch, frames, c.in_channels - c.audio_acoustic_hidden_dim)
        cond = torch.randn(batch, cond_tokens, c.encoder_hidden_size or c.hidden_size)
        t = torch.rand(batch)
    with FlopCounterMode(display=False) as counter:
        v = dit(hidden_states=x0, timestep=t, timestep_r=t, encoder_hidden_states=cond, context_latents=context,
                return_dict=False)[0]
        v.float().pow(2).sum().backward()
    return int(counter.get_total_flops())


def check_device(device: str) -> None:
    """--device cuda needs a GPU torch can use: say so plainly and stop, before anything is built."""
    if device != "cuda":
        return
    import torch

    if not torch.cuda.is_available():
        raise SystemExit(f"bench_acestep.py --device cuda needs a CUDA GPU, and torch {torch.__version__} sees none "
                         "(torch.cuda.is_available() is False). Run it on a machine with an NVIDIA GPU and a CUDA "
                         "build of torch, or drop --device cuda for the CPU benchmark.")


def encoder_summary(results: list[dict], layers: tuple[int, int, int]) -> dict[str, Any] | None:
    """Resident memory the encoders add, per module: measured at the built depths, and extrapolated to the real
    depths by the module's measured bytes per parameter x its real parameter count (the VAE is built whole)."""
    with_enc = [r for r in results if r.get("encoders") and "error" not in r]
    if not with_enc:
        return None
    built, real = n_params(encoder_modules(*layers, meta=True)), n_params(encoder_modules(None, None, None, meta=True))
    out: dict[str, Any] = {"built_params": built, "real_params": real}
    for r in with_enc:
        twin = next((x for x in results if not x.get("encoders") and "error" not in x and
                     all(x[k] == r[k] for k in ("model", "method", "ckpt", "seconds"))), None)
        per_param = {m: r[f"{m}_rss_gib"] * 2**30 / built[m] for m in built}
        out[f"{r['model']}-{r['method']}"] = {
            "resident_gib": r["encoders_rss_gib"], "by_module_gib": {m: r[f"{m}_rss_gib"] for m in built},
            "bytes_per_param": per_param,
            "step_peak_delta_gib": (r["rss_step_gib"] - twin["rss_step_gib"]) if twin else None,
            "full_size_fp32_gib": {m: per_param[m] * real[m] / 2**30 for m in real},
            "full_size_bf16_weights_gib": 2 * sum(real.values()) / 2**30,
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--models", default=None, help="comma list of tiny, wide, real, xl (default: tiny,wide on cpu; "
                                                   "real on cuda)")
    ap.add_argument("--layers", type=int, default=2, help="DiT layers of the `wide` model (the real one has 24)")
    ap.add_argument("--methods", default=None, help="comma list of lora, full (default: lora,full on cpu; lora on "
                                                    "cuda, where a full fine-tune's checkpoint of the full-depth DiT "
                                                    "is ~19 GB)")
    ap.add_argument("--targets", default="attention", help="LoRA targets: attention (the official trainer's), "
                                                           "attention_ffn, all")
    ap.add_argument("--rank", type=int, default=None, help="LoRA rank, alpha = 2 x rank (default: the model "
                                                           "group's r 8, alpha 16)")
    ap.add_argument("--seconds", default=None, help="comma list of clip lengths (default 10 on cpu; 30,120 on cuda)")
    ap.add_argument("--batch", type=int, default=1, help="windows per step (one length, never padded; the "
                                                          "trainer's default is 1)")
    ap.add_argument("--cond-tokens", type=int, default=128, help="condition states per window (caption, metas and "
                                                                 "lyrics as the condition encoder packs them)")
    ap.add_argument("--steps", type=int, default=None, help="steps per configuration, the first one a warm-up")
    ap.add_argument("--ckpt", default=None, choices=["false", "true", "both"],
                    help="gradient checkpointing (default false on cpu, both on cuda)")
    ap.add_argument("--encoders", default=None, help="comma list of methods to also run with the encoders resident "
                                                     "(the wide model only; default lora on cpu, none on cuda)")
    ap.add_argument("--encoder-layers", default="2,1,1", help="text encoder, lyric encoder, timbre encoder layers "
                                                              "built for --encoders (real: 28, 8, 4); the VAE is "
                                                              "built whole")
    ap.add_argument("--peak-tflops", type=float, default=None, help="the GPU's peak dense bf16 TFLOPS when its name "
                                                                    "is not in the table")
    ap.add_argument("--workers", type=int, default=0, help="data.num_workers")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (OMP_NUM_THREADS) per run")
    ap.add_argument("--repeats", type=int, default=1, help="run every configuration this many times, interleaved; "
                                                            "report medians")
    ap.add_argument("--work", default=None, help="folder for the data sets and built models, reused when present "
                                                 "(default: a new temporary folder)")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(json.loads(args.child))), flush=True)
        return
    check_device(args.device)
    cuda = args.device == "cuda"
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="tunekit-bench-acestep-"))
    work.mkdir(parents=True, exist_ok=True)
    import torch

    print(f"device={args.device} clips={args.seconds or ('30,120' if cuda else '10')}s precision="
          f"{'bf16' if cuda else 'fp32'} torch threads={args.threads or torch.get_num_threads()} "
          f"cores={os.cpu_count()} load average={os.getloadavg()[0]:.1f} repeats={args.repeats}", flush=True)
    specs, configs = plan(args, work)
    device_info = gpu_info(args.peak_tflops) if cuda else {}

    runs: list[list[dict]] = [[] for _ in specs]
    loads: list[float] = []
    for _ in range(args.repeats):  # interleaved: every configuration once per round
        for i, spec in enumerate(specs):
            shutil.rmtree(spec["out"], ignore_errors=True)
            loads.append(os.getloadavg()[0])
            runs[i].append(bench_train.run_child(spec, args.threads, script=__file__))
            shutil.rmtree(spec["out"], ignore_errors=True)
    loads.append(os.getloadavg()[0])

    results = [report(spec, spec_runs, configs[spec["name"]], device_info) for spec, spec_runs in zip(specs, runs)]
    summary = encoder_summary(results, tuple(int(x) for x in args.encoder_layers.split(",")))
    if summary:
        print_encoder_summary(summary)
    print(f"load average (1 min) before each run and at the end: {min(loads):.1f}-{max(loads):.1f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"device": device_info, "load_average": loads, "results": results,
                                               "encoders": summary}, indent=2))


def plan(args: argparse.Namespace, work: Path) -> tuple[list[dict], dict[str, dict[str, Any]]]:
    """Build what is missing under `work` (DiT folders, encoders, data sets) and list the configurations, each
    with its parameter counts and pre-flight estimate; returns (specs, DiT config by model)."""
    from tunekit.models.registry import DEFAULTS

    cuda = args.device == "cuda"
    models = (args.models or ("real" if cuda else "tiny,wide")).split(",")
    methods = (args.methods or ("lora" if cuda else "lora,full")).split(",")
    seconds_list = [float(s) for s in (args.seconds or ("30,120" if cuda else "10")).split(",")]
    ckpts = {"false": [False], "true": [True], "both": [False, True]}[args.ckpt or ("both" if cuda else "false")]
    encoders = [m for m in (args.encoders if args.encoders is not None else ("" if cuda else "lora")).split(",") if m]
    enc_layers = [int(x) for x in args.encoder_layers.split(",")]
    unknown = sorted(set(models) - {"tiny", *DIT_SHAPES}) + sorted(set(methods + encoders) - {"lora", "full"})
    if unknown or len(enc_layers) != 3:
        raise SystemExit(f"unknown --models/--methods/--encoders value(s) {', '.join(unknown)} or --encoder-layers "
                         f"not three numbers: models are tiny, {', '.join(DIT_SHAPES)}; methods lora, full")
    encoders_folder = None
    if encoders and "wide" in models:
        encoders_folder = work / f"encoders-{'-'.join(map(str, enc_layers))}"
        if not (encoders_folder / "vae" / "config.json").is_file():
            build_in_child({"kind": "build_encoders", "layers": enc_layers, "out": str(encoders_folder)})
    base = [MODEL_GROUP] + ([f"method.r={args.rank}", f"method.alpha={2 * args.rank}"] if args.rank else [])
    specs, configs = [], {}
    for name in models:
        tiny = name == "tiny"
        folder = work / (f"dit-wide-{args.layers}l" if name == "wide" else f"dit-{name}")
        model = DEFAULTS["acestep"] if tiny else str(folder)  # the turbo id: its tiny stand-in
        if not tiny and not (folder / "transformer" / "config.json").is_file():
            build_in_child({"kind": "build", "shape": name, "layers": args.layers, "out": str(folder)})
        c = configs[name] = dit_config(model, tiny)
        channels, hidden = c["audio_acoustic_hidden_dim"], c.get("encoder_hidden_size") or c["hidden_size"]
        for seconds in seconds_list:
            frames = int(round(seconds * LATENT_RATE))
            data = work / f"data-{channels}x{hidden}-{frames}f-{args.cond_tokens}c"
            if not (data / "windows.parquet").is_file():
                write_latent_dataset(data, frames=frames, channels=channels, hidden=hidden,
                                     cond_tokens=args.cond_tokens, model=model)
            for method in methods:
                for ckpt in ckpts:
                    for enc in ([None, encoders_folder] if name == "wide" and method in encoders else [None]):
                        tag = f"{name}-{method}-{seconds:g}s-{'ckpt' if ckpt else 'nockpt'}{'-enc' if enc else ''}"
                        spec = dict(name=name, data=str(data), out=str(work / f"run-{tag}"), model=model, tiny=tiny,
                                    method=method, targets=args.targets, device=args.device,
                                    precision="bf16" if cuda else "fp32", batch=args.batch, seconds=seconds,
                                    steps=args.steps or (20 if cuda else (8 if tiny else 3)), ckpt=ckpt,
                                    workers=args.workers, base_overrides=base, encoders=str(enc) if enc else None,
                                    frames=frames, cond_tokens=args.cond_tokens)
                        spec.update(preflight(spec, c, frames, args.cond_tokens))
                        specs.append(spec)
    return specs, configs


def build_in_child(spec: dict) -> None:
    """Build a DiT or encoders folder in a child process (the parent stays small), timing it."""
    t0 = time.perf_counter()
    built = bench_train.run_child(spec, script=__file__)
    if "error" in built:
        raise SystemExit(f"building {spec['out']} failed: {built['log']}")
    print(f"built {spec['out']} in {time.perf_counter() - t0:.0f} s", flush=True)


def gpu_info(peak: float | None) -> dict[str, Any]:
    """The GPU's name, its measured bf16 matmul TFLOPS and its peak (spec sheet, or `peak` when given)."""
    info = bench_train.run_child({"kind": "matmul"}, script=__file__)
    if "error" in info:
        raise SystemExit(f"the bf16 matmul on the GPU failed: {info['log']}")
    info["peak_tflops"] = peak or peak_tflops(info["gpu_name"])
    print(f"{info['gpu_name']}: bf16 matmul {info['matmul_tflops']:.0f} TFLOPS measured, spec sheet "
          f"{info['peak_tflops'] or 'unknown (pass --peak-tflops)'}", flush=True)
    return info


def report(spec: dict, spec_runs: list[dict], c: dict[str, Any], device_info: dict[str, Any]) -> dict[str, Any]:
    """The medians of one configuration's runs with its tokens, FLOPs and (cuda) MFU added; prints its line."""
    r = bench_train.summarise(spec_runs)
    keep = ("trainable", "dit_params", "estimate_gib", "encoders", "frames", "cond_tokens", "batch", "counted_flops")
    r.update({k: spec[k] for k in keep}, model=spec["name"], method=spec["method"], ckpt=spec["ckpt"],
             seconds=spec["seconds"], runs=spec_runs)
    enc = " +encoders" if spec["encoders"] else ""
    head = f"{spec['name']:4} {spec['method']:4} {spec['seconds']:g}s b={spec['batch']} ckpt={spec['ckpt']!s:5}{enc:10}"
    if "error" in r:
        print(f"{head}  FAILED: {r['error']}", flush=True)
        return r
    flops = dit_flops(c, frames=spec["frames"], cond_tokens=spec["cond_tokens"], batch=spec["batch"],
                      full=spec["method"] == "full")
    r.update(dit_tokens_per_step=flops["tokens"], dit_tokens_per_s=flops["tokens"] / r["s_per_step"],
             model_flops_per_step=flops["step"], six_nt_flops_per_step=flops["six_nt"],
             achieved_tflops=flops["step"] / r["s_per_step"] / 1e12,
             rss_step_gib=float(np.median(r["rss_peak_by_step"][1:] or r["rss_peak_by_step"])))
    line = (f"{head}  {r['dit_tokens_per_s']:8.1f} tok/s  {r['s_per_step']:7.2f} s/step  "
            f"{r['cpu_s_per_step']:7.2f} cpu s/step  rss by step {r['rss_step_gib']:.2f} GiB (process "
            f"{r['rss_peak_gib']:.2f}, estimate {r['estimate_gib']:.2f})  {flop_units(flops['step'])}/step "
            f"(torch counts {flop_units(spec['counted_flops'])}) = {flop_units(1e12 * r['achieved_tflops'])}/s  "
            f"{r['trainable'] / 1e6:.2f}M of {r['dit_params'] / 1e6:.1f}M trainable")
    if "gpu_peak_gib" in r:
        peak = device_info.get("peak_tflops")
        r["mfu"] = r["achieved_tflops"] / peak if peak else None
        r["matmul_fraction"] = r["achieved_tflops"] / device_info["matmul_tflops"]
        line += f"  gpu {r['gpu_peak_gib']:.2f} GiB  MFU " + (f"{100 * r['mfu']:.1f}%" if peak else "?") + \
            f" ({100 * r['matmul_fraction']:.1f}% of the measured matmul)"
    if spec["encoders"]:
        line += f"  encoders resident +{r['encoders_rss_gib']:.2f} GiB ({r['encoders_params'] / 1e6:.0f}M built)"
    print(line, flush=True)
    return r


def flop_units(flops: float) -> str:
    """FLOPs in GFLOP or TFLOP, three significant figures."""
    return f"{flops / 1e12:.3g} TFLOP" if flops >= 1e12 else f"{flops / 1e9:.3g} GFLOP"


def print_encoder_summary(summary: dict[str, Any]) -> None:
    """What the encoders add, measured, and the full-size arithmetic."""
    built, real = summary["built_params"], summary["real_params"]
    print("encoders (params + buffers) built: " + ", ".join(f"{k} {v / 1e6:.1f}M" for k, v in built.items())
          + "; real: " + ", ".join(f"{k} {v / 1e6:.1f}M" for k, v in real.items()), flush=True)
    for key, s in summary.items():
        if not (isinstance(s, dict) and "resident_gib" in s):
            continue
        delta = s["step_peak_delta_gib"]
        print(f"{key}: the encoders add {s['resident_gib']:.2f} GiB resident"
              + (f" (step peak +{delta:.2f} GiB)" if delta is not None else "") + "; at full size "
              + " + ".join(f"{m} {s['bytes_per_param'][m]:.2f} B x {real[m] / 1e6:.1f}M = "
                           f"{s['full_size_fp32_gib'][m]:.2f}" for m in real)
              + f" = {sum(s['full_size_fp32_gib'].values()):.2f} GiB in fp32 "
              f"({s['full_size_bf16_weights_gib']:.2f} GiB of bf16 weights)", flush=True)


if __name__ == "__main__":
    main()
