"""What a finished run leaves behind: the peft adapter or transformers model, and a model card that says what
it was trained on (with licences and attribution), how, how well, and how to use it.
"""

from __future__ import annotations

import csv
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from tunekit.atomic import write_text
from tunekit.data.tokens import TokenSet


def data_card(tokens: TokenSet, train: np.ndarray, valid: np.ndarray) -> dict[str, Any]:
    """Counts, hours and licences of the windows a run trained and validated on."""
    rate = tokens.info.frame_rate
    used = np.concatenate([train, valid])
    licences: Counter[str] = Counter()
    tracks_seen: set[str] = set()
    for r in used:
        tid = tokens.track_id[r]
        if tid not in tracks_seen:
            tracks_seen.add(tid)
            licences[str(tokens.license[r] or "unknown")] += 1
    return {
        "path": str(tokens.root),
        "pipeline": tokens.pipeline(),
        "codec": tokens.info.codec,
        "train_windows": int(len(train)),
        "valid_windows": int(len(valid)),
        "train_tracks": len(set(tokens.track_id[train])),
        "valid_tracks": len(set(tokens.track_id[valid])),
        "train_hours": float(tokens.frames[train].sum() / rate / 3600),
        "licences": dict(sorted(licences.items())),
    }


def copy_attribution(data_root: Path, run_dir: Path) -> list[dict[str, str]]:
    """Copy the prep output's attribution.csv into the run (it travels with the model); returns its rows."""
    src = data_root / "attribution.csv"
    if not src.is_file():
        return []
    shutil.copyfile(src, run_dir / "attribution.csv")
    with open(src, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _snippet(run_dir: Path, base: str, full: bool, tiny: bool) -> str:
    tiny_arg = " models=tiny" if tiny else ""
    cli = f'tunekit generate run={run_dir} prompt="your prompt" duration=20 out=out.wav{tiny_arg}'
    if full:
        py = f"""from transformers import AutoProcessor, MusicgenForConditionalGeneration

model = MusicgenForConditionalGeneration.from_pretrained("{run_dir}/model")
processor = AutoProcessor.from_pretrained("{run_dir}/model")"""
    else:
        py = f"""from peft import PeftModel
from transformers import AutoProcessor, MusicgenForConditionalGeneration

base = MusicgenForConditionalGeneration.from_pretrained("{base}")
model = PeftModel.from_pretrained(base, "{run_dir}/adapter").merge_and_unload()
processor = AutoProcessor.from_pretrained("{base}")"""
    py += """
inputs = processor(text=["your prompt"], padding=True, return_tensors="pt")
audio = model.generate(**inputs, do_sample=True, guidance_scale=3.0, top_k=250, max_new_tokens=503)  # ~10 s
rate = model.config.audio_encoder.sampling_rate  # audio[0] is (channels, samples) at this rate"""
    return f"```bash\n{cli}\n```\n\n```python\n{py}\n```"


def write_model_card(
    run_dir: Path,
    *,
    cfg: Any,
    base: str,
    base_path: str,
    trainable: int,
    total: int,
    data: dict[str, Any],
    metrics: dict[str, Any],
    attribution: list[dict[str, str]],
) -> Path:
    """`<run>/README.md`: base model, recipe, data (licences, attribution), metrics and a working snippet.

    `base` is the configured model id; `base_path` what loads it here (the tiny stand-in's folder with models=tiny).
    """
    full = cfg.method.name == "full"
    m = cfg.method
    method = (
        f"full fine-tune of the decoder ({trainable:,} trainable parameters)"
        if full
        else f"LoRA r={m.r}, alpha={m.alpha:g}, dropout={m.dropout:g}, targets `{m.targets}` "
        f"({trainable:,} trainable of {total:,} parameters)"
    )
    t = cfg.trainer
    lic = ", ".join(f"{k} ({v} tracks)" for k, v in data["licences"].items()) or "unknown"
    lines = [
        f"# {run_dir.name}",
        "",
        (f"A fine-tune of [{base}](https://huggingface.co/{base}) made with tunekit" if "/" in base and not
         Path(base).exists() else f"A fine-tune of `{base}` made with tunekit")
        + (f" (recipe `{cfg.recipe_name}`)." if cfg.recipe_name else "."),
        "",
        "## Training",
        "",
        f"- base model: `{base}`" + (" (tiny random stand-in, for tests)" if cfg.models.tiny else ""),
        f"- method: {method}",
        f"- steps: {metrics.get('step')} x global batch {metrics.get('global_batch')} "
        f"({t.batch_size} per device x {t.grad_accum} accumulation x {metrics.get('world_size', 1)} devices), "
        f"{data['codec']} tokens, crops of {cfg.data.crop_seconds:g} s",
        f"- optimiser: AdamW lr {t.lr:g} (betas {list(t.betas)}, weight decay {t.weight_decay:g}), "
        f"{t.schedule} schedule with warmup {t.warmup:g}, grad clip {t.grad_clip:g}, "
        f"precision {metrics.get('precision')}",
        f"- classifier-free guidance dropout: {t.cond_dropout:g} per sample"
        + (f"; EMA {t.ema_decay:g} every {t.ema_every} steps" if t.ema_decay > 0 else ""),
        "",
        "## Data",
        "",
        f"- prepared data: `{data['path']}`" + (f" (pipeline `{data['pipeline']}`)" if data.get("pipeline") else ""),
        f"- training: {data['train_windows']} windows from {data['train_tracks']} tracks "
        f"({data['train_hours']:.2f} h); validation: {data['valid_windows']} windows from {data['valid_tracks']} "
        "other tracks (split by track)",
        f"- licences: {lic}",
    ]
    if attribution:
        lines += ["", "### Attribution", "", "The training audio includes (full list in `attribution.csv`):", ""]
        for row in attribution[:50]:
            credit = row.get("credit") or row.get("attribution")  # prep writes the licence into the credit
            if credit:
                lines.append(f"- {credit}")
            else:
                who = " - ".join(x for x in (row.get("artist"), row.get("title")) if x) or row.get("track_id", "")
                lines.append(f"- {who}" + (f" ({row['license']})" if row.get("license") else ""))
        if len(attribution) > 50:
            lines.append(f"- … and {len(attribution) - 50} more")
    lines += ["", "## Metrics", ""]
    for key in ("train_loss", "valid_loss", "best_valid_loss", "tokens_per_s", "skipped_nonfinite", "skipped_fp16"):
        if metrics.get(key) is not None:
            value = metrics[key]
            lines.append(f"- {key}: {value:.4f}" if isinstance(value, float) else f"- {key}: {value}")
    lines += [
        "",
        "Per-step values are in `metrics.jsonl`; evaluation samples with their prompts under `samples/`.",
        "",
        "## Use",
        "",
        _snippet(run_dir, base_path, full, bool(cfg.models.tiny)),
        "",
        "The full training configuration is in `config.yaml`; re-running the same `tunekit train` command "
        "resumes or reproduces the run.",
        "",
    ]
    path = run_dir / "README.md"
    write_text(path, "\n".join(lines))
    return path
