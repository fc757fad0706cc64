"""Builders shared by the training tests: a small prepared dataset in the prep contract's exact layout
(windows.parquet, tracks.parquet, per-track uint16 token files, audio, summary, attribution), config
composition for `tunekit train` / `tunekit generate`, child-process runs, and the tolerances for comparing
two training runs that must take the same steps."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
from _numerics import as_array, assert_close, assert_close_in_norm, reorder_rtol

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
    codec_digest = "tinyencodec0123456789"
    token_dir = root / "tokens" / codec_digest[:12]
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
                    "tokens_path": f"tokens/{codec_digest[:12]}/{tid}.npy",
                    "tokens_offset": sum(len(s) for s in stored[:-1]),
                    "tokens_frames": n, "tokens_codec": "facebook/encodec_32khz", "tokens_codec_hash": codec_digest,
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


# Where a child run (train_process, torchrun) saves the gradients of its first optimiser step, if set.
GRADIENTS_ENV = "TUNEKIT_TEST_GRADIENTS"


def child_env(**extra: str) -> dict[str, str]:
    """Environment for child processes: this checkout first on the path, one thread per process.

    Every thread-count variable is pinned (OpenMP, MKL, OpenBLAS), so a child computes with the same
    number of threads, hence the same float reduction order, as a test that calls
    `torch.set_num_threads(1)`, whatever the caller's environment says.
    """
    path = os.pathsep.join([str(REPO / "tests"), str(REPO / "src")])
    one = {name: "1" for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    return {**os.environ, "PYTHONPATH": path, **one, **extra}


def capture_first_step_gradients(folder: Path, rank: int = 0, setattr_: Any = setattr,
                                 trainer_module: str = "tunekit.train.musicgen") -> None:
    """Make the trainer save, at its first optimiser step, the gradients the optimiser receives (after the
    DDP all-reduce and clipping) to `<folder>/grads-rank<rank>.safetensors` and the weights they apply to
    (the initial ones) to `<folder>/weights-rank<rank>.safetensors`, keyed by parameter name.

    It wraps `param_groups` (to learn the names) and `build_optimizer` (to hook the optimiser's step) in the
    trainer's namespace (`trainer_module`); pass pytest's `monkeypatch.setattr` as `setattr_` to undo it after an
    in-process test.
    """
    import importlib

    from safetensors.torch import save_file

    trainer = importlib.import_module(trainer_module)

    real_groups, real_build = trainer.param_groups, trainer.build_optimizer
    names: dict[int, str] = {}

    def groups(module: Any, weight_decay: float) -> list[dict[str, Any]]:
        names.update({id(p): n for n, p in module.named_parameters()})
        return real_groups(module, weight_decay)

    def build(param_groups: list[dict[str, Any]], t: Any, device_type: str) -> tuple[Any, Any]:
        opt, sched = real_build(param_groups, t, device_type)

        def save(optimizer: Any, args: Any, kwargs: Any) -> None:
            params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
            folder.mkdir(parents=True, exist_ok=True)
            for what, tensors in (("grads", [p.grad for p in params]), ("weights", params)):
                save_file({names[id(p)]: x.detach().clone().contiguous() for p, x in zip(params, tensors)},
                          str(folder / f"{what}-rank{rank}.safetensors"))
            handle.remove()  # the first step only

        handle = opt.register_step_pre_hook(save)
        return opt, sched

    setattr_(trainer, "param_groups", groups)
    setattr_(trainer, "build_optimizer", build)


def train_process(data: Path, out: Path, *overrides: str) -> subprocess.Popen:
    """`run_train` in a child process (as the CLI would run it), for kill-and-resume tests."""
    return subprocess.Popen(
        [sys.executable, __file__, str(data), str(out), *overrides],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=child_env(), text=True,
    )


def kill_after_checkpoint(proc: subprocess.Popen, run: Path, step: int, timeout: float = 240) -> str:
    """SIGKILL the training child `proc` once `run` holds the checkpoint of `step`; returns its output and
    checks that it was killed mid-run, not finished."""
    import signal
    import time

    marker = run / "checkpoints" / f"step-{step:07d}" / "state.json"
    deadline = time.time() + timeout
    while not marker.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    output = proc.stdout.read()
    assert proc.returncode == -signal.SIGKILL, output
    return output


def torchrun(nproc: int, data: Path, out: Path, *overrides: str, gradients: Path | None = None,
             script: str = __file__) -> subprocess.CompletedProcess:
    """`run_train` on `nproc` CPU processes (DDP over gloo), launched by torchrun (the `__main__` of `script`,
    this module's by default); with `gradients`, every rank saves its first step's gradients there (see
    `capture_first_step_gradients`)."""
    extra = {GRADIENTS_ENV: str(gradients)} if gradients is not None else {}
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
         script, str(data), str(out), *overrides],
        capture_output=True, env=child_env(**extra), text=True,
    )


# ---- comparing two training runs ------------------------------------------------------------------------------


def musicgen_sums(model_name: str, *, windows: int, frames: int, text_tokens: int, tokens: int, lora_r: int = 0
                  ) -> dict[str, list[int]]:
    """Sizes of the float32 sums on the longest path through one training step of a tiny MusicGen on `windows`
    windows of up to `frames` frames, for `_numerics.reorder_rtol`.

    forward: the text encoder (T5) then the decoder, block by block: a norm (width), a projection (width, plus
    r through a LoRA adapter), the attention scores (head size), the softmax and the weighted values (keys), the
    output projection; the feed-forward's two projections; the final norm, a head (width) and the log-softmax
    (vocabulary). loss: the sum over the step's `tokens`. backward: the decoder's sums again, the heads'
    contributions summed over codebooks x vocabulary, and each weight gradient's sum over the rows of the whole
    step (windows x decoder steps, accumulation and ranks included).
    """
    from transformers import AutoConfig

    from tunekit.models.registry import resolve
    from tunekit.train.loss import codebook_delays

    cfg = AutoConfig.from_pretrained(resolve(model_name, tiny=True))
    t5, dec = cfg.text_encoder, cfg.decoder
    steps = frames + max(codebook_delays(dec.num_codebooks, dec.audio_channels))
    inner = t5.num_heads * t5.d_kv
    text = [t5.d_model, t5.d_model, t5.d_kv, text_tokens, text_tokens, inner, t5.d_model, t5.d_model, t5.d_ff]
    forward = text * t5.num_layers + [t5.d_model, t5.d_model]  # final norm, projection into the decoder
    h, head, r = dec.hidden_size, dec.hidden_size // dec.num_attention_heads, lora_r
    block = [h, h + r, head, steps, steps, h + r,  # self-attention
             h, h + r, head, text_tokens, text_tokens, h + r,  # cross-attention
             h, h + r, dec.ffn_dim + r]  # feed-forward
    decoder = block * dec.num_hidden_layers
    forward += decoder + [h, h, dec.vocab_size]
    backward = decoder + [dec.num_codebooks * dec.vocab_size, windows * steps]
    return {"forward": forward, "loss": [tokens], "backward": backward}


# Adam-updated weights of two runs whose gradients differ only by rounding, compared as ‖Δ‖ / ‖W − W0‖ over
# the whole adapter. Adam divides by √v, so an element's step changes little where its gradient is resolved
# (|Δ step| ≲ 2·δ·lr for a relative gradient error δ, ~1e-6 measured), but by up to 2·lr where its gradient (or
# its momentum) lies within rounding of zero; such an element then stays up to 2·Σlr apart. In the tests' 3-step
# runs (45k LoRA parameters, lr 1e-3, ‖W − W0‖ ≈ 0.26) that is at most 1.6% of the update per element, and the
# expected number of such elements is well under one (a share ~δ of them), so 3e-2 leaves room for three. A loss
# normalised per rank or per micro-batch instead of by the global token count moves the weights by ~0.3 of the
# update, ten times the tolerance (its gradient, compared to rounding, is caught with far more margin).
ADAM_WEIGHT_RTOL = 3e-2


def adam_step_bound(betas: tuple[float, float], step: int) -> float:
    """The largest |m̂/√v̂| Adam can take at `step` (1-based), whatever the gradients.

    m̂ = Σ w_i·g_i and v̂ = Σ w'_i·g_i² with the bias-corrected weights w_i = (1−β1)·β1^(t−i) / (1−β1^t) and
    w'_i likewise for β2; by Cauchy–Schwarz |m̂| / √v̂ <= √(Σ w_i² / w'_i). It is 1 at step 1.
    """
    b1, b2 = betas
    ages = np.arange(step)
    w1 = (1 - b1) * b1 ** ages / (1 - b1 ** step)
    w2 = (1 - b2) * b2 ** ages / (1 - b2 ** step)
    return float(np.sqrt(np.sum(w1 ** 2 / w2)))


def loss_tolerances(rows: list[dict[str, Any]], *, loss_rtol: float, n_params: int,
                    betas: tuple[float, float]) -> list[float]:
    """Bounds on |Δ loss| per logged step between two runs that take the same steps up to rounding.

    Step 1 is computed before any update: float32 rounding only, loss_rtol·loss. Later, one AdamW step moves
    each weight by at most adam_step_bound·lr, so the runs' weights differ by at most 2·√P·Σ_(j<k) bound_j·lr_j
    before step k (every element on opposite sides: the worst case), and the loss by at most the logged
    gradient norm times that (first order; the weight decay part differs only by lr·wd·|Δθ|, second order).
    """
    out, apart = [], 0.0
    for k, row in enumerate(rows, start=1):
        out.append(float(loss_rtol * abs(row["loss"]) + row["grad_norm"] * apart))
        apart += 2 * float(np.sqrt(n_params)) * adam_step_bound(betas, k) * row["lr"]
    return out


def _adapter(run: Path) -> dict[str, Any]:
    """The exported adapter's tensors, named as the trained module's parameters."""
    from safetensors.torch import load_file

    tensors = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    return {k.removeprefix("base_model.model.").replace(".weight", ".default.weight"): v for k, v in tensors.items()}


def _loss_rows(run: Path) -> list[dict[str, Any]]:
    rows = (json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines())
    return [r for r in rows if "loss" in r]


def step_bounds(ref: Path, grads: Path) -> dict[str, Any]:
    """Tolerances for runs that must take the steps of the one-process run `ref` (whose first-step gradients
    are in `grads`): gradient_rtol and loss_rtol (`reorder_rtol` of `musicgen_sums`), the trained parameter
    count and AdamW's betas."""
    from omegaconf import OmegaConf
    from safetensors.torch import load_file

    from tunekit.train.methods import build_method

    cfg = OmegaConf.load(ref / "config.yaml")
    sums = musicgen_sums(
        cfg.model.name, windows=cfg.trainer.batch_size * cfg.trainer.grad_accum,
        frames=int(round(cfg.data.crop_seconds * FRAME_RATE)), text_tokens=cfg.data.max_text_tokens,
        tokens=_loss_rows(ref)[0]["tokens"], lora_r=0 if build_method(cfg.method).full else cfg.method.r,
    )
    return {
        "gradient_rtol": reorder_rtol(*sums["forward"], *sums["loss"], *sums["backward"]),
        "loss_rtol": reorder_rtol(*sums["forward"], *sums["loss"]),
        "n_params": sum(v.numel() for v in load_file(str(grads / "grads-rank0.safetensors")).values()),
        "betas": tuple(cfg.trainer.betas),
    }


def assert_same_steps(ref: Path, ref_grads: Path, run: Path, grads: Path, *, what: str, ranks: int = 1
                      ) -> dict[str, float]:
    """`run` took the same optimiser steps as `ref` (DDP, accumulation, checkpointing against one plain batch).

    Their first step's gradients (saved by `capture_first_step_gradients`, every rank of `run`) agree per tensor
    to gradient_rtol in norm; their losses agree within `loss_tolerances`; their exported adapters agree to
    ADAM_WEIGHT_RTOL of the update ‖W − W0‖. Returns the measured ratios (Δ / tolerance) for reports.
    """
    from safetensors.torch import load_file

    bounds = step_bounds(ref, ref_grads)
    expected = load_file(str(ref_grads / "grads-rank0.safetensors"))
    measured: dict[str, float] = {}
    for rank in range(ranks):
        got = load_file(str(grads / f"grads-rank{rank}.safetensors"))
        ratios = assert_close_in_norm(got, expected, rtol=bounds["gradient_rtol"],
                                      what=f"{what}: step-1 gradient of rank {rank}")
        measured["gradient"] = max(measured.get("gradient", 0.0), max(ratios.values()) / bounds["gradient_rtol"])

    ref_rows, rows = _loss_rows(ref), _loss_rows(run)
    assert [r["step"] for r in rows] == [r["step"] for r in ref_rows], what
    assert [r["tokens"] for r in rows] == [r["tokens"] for r in ref_rows], f"{what}: another token count per step"
    tols = loss_tolerances(ref_rows, loss_rtol=bounds["loss_rtol"], n_params=int(bounds["n_params"]),
                           betas=bounds["betas"])
    losses, ref_losses = [r["loss"] for r in rows], [r["loss"] for r in ref_rows]
    assert_close(losses, ref_losses, atol=np.array(tols), what=f"{what}: losses by step")
    measured["loss"] = float(max(abs(x - y) / t for x, y, t in zip(losses, ref_losses, tols)))

    w0 = load_file(str(ref_grads / "weights-rank0.safetensors"))
    measured["weights"] = assert_same_adapters(_adapter(ref), _adapter(run), w0, what=what)
    return measured


def assert_same_adapters(a: dict[str, Any], b: dict[str, Any], w0: dict[str, Any], *, what: str) -> float:
    """Adapters `b` and `a`, trained from the same initial weights `w0`, differ by at most ADAM_WEIGHT_RTOL of
    the update ‖a − w0‖ (AdamW amplifies rounding differences: never compare its weights bitwise). Returns the
    measured ratio / tolerance."""
    assert a.keys() == b.keys() == w0.keys(), f"{what}: the adapters hold other tensors"
    names = sorted(a)
    delta = np.concatenate([as_array(b[k] - a[k]).ravel() for k in names])
    update = np.concatenate([as_array(a[k] - w0[k]).ravel() for k in names])
    ratio = float(np.linalg.norm(delta) / np.linalg.norm(update))
    worst_name = max(names, key=lambda k: float((b[k] - a[k]).abs().max()))
    assert ratio <= ADAM_WEIGHT_RTOL, (
        f"{what}: adapters differ by {ratio:.3g} of the update ‖W − W0‖ (tolerance {ADAM_WEIGHT_RTOL}); "
        f"largest in {worst_name}: max |Δ| {float((b[worst_name] - a[worst_name]).abs().max()):.3g}"
    )
    return ratio / ADAM_WEIGHT_RTOL


if __name__ == "__main__":
    from tunekit.train.run import run_train

    if os.environ.get(GRADIENTS_ENV):
        capture_first_step_gradients(Path(os.environ[GRADIENTS_ENV]), int(os.environ.get("RANK", "0")))
    raise SystemExit(run_train(train_cfg(Path(sys.argv[1]), Path(sys.argv[2]), *sys.argv[3:])))
