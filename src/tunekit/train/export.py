"""What a finished run leaves behind: the adapter or model folders, and a model card that says what it was
trained on (with licences and attribution), under which terms it may be used, how it was trained, how well, and
how to use it. The card starts with Hugging Face front matter and is written into the run and into every weights
folder, so an uploaded adapter carries it. What differs by family (the training inputs, the usage snippet, the
library that loads each folder) is passed in by the family's trainer; MusicGen's are the defaults.
"""

from __future__ import annotations

import contextlib
import csv
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tunekit.atomic import write_text
from tunekit.data.latents import LatentSet
from tunekit.data.tokens import TokenSet

MUSICGEN_FOLDERS = {"adapter": "peft", "model": "transformers", "merged": "transformers"}  # folder -> library


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Write a folder under a temporary name, then swap it into place."""
    tmp = final.with_name(f".tmp-{final.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    yield tmp
    old = final.with_name(f".old-{final.name}")
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def _track_licences(tokens: TokenSet | LatentSet, rows: np.ndarray) -> dict[str, str]:
    """track_id -> licence name (tunekit.corpus.license.license_name) of the tracks behind `rows`."""
    from tunekit.corpus.license import license_name

    out: dict[str, str] = {}
    for r in rows:
        tid = str(tokens.track_id[r])
        if tid not in out:
            out[tid] = license_name(tokens.license[r])
    return out


def data_card(tokens: TokenSet | LatentSet, train: np.ndarray, valid: np.ndarray) -> dict[str, Any]:
    """Counts, hours and licences of the windows a run trained on, and of the tracks only used to evaluate.

    Evaluation-only tracks are the validation and test tracks (never in a training batch); their
    licences are listed apart from the training tracks' licences, which alone bind the weights.
    """
    rate = tokens.info.frame_rate
    trained = _track_licences(tokens, train)
    held_out = np.flatnonzero(np.isin(tokens.split, ["valid", "test"]))
    evaluated = {t: lic for t, lic in _track_licences(tokens, np.concatenate([valid, held_out])).items()
                 if t not in trained}
    return {
        "path": str(tokens.root),
        "pipeline": tokens.pipeline(),
        "codec": tokens.info.codec,
        "train_windows": int(len(train)),
        "valid_windows": int(len(valid)),
        "train_tracks": len(trained),
        "valid_tracks": len(set(tokens.track_id[valid])),
        "train_hours": float(tokens.frames[train].sum() / rate / 3600),
        "train_track_ids": sorted(trained),
        "licences": dict(sorted(Counter(trained.values()).items())),
        "eval_tracks": len(evaluated),
        "eval_track_ids": sorted(evaluated),
        "eval_licences": dict(sorted(Counter(evaluated.values()).items())),
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


def _tracks(n: int) -> str:
    return f"{n} track" if n == 1 else f"{n} tracks"


def _counts(licences: dict[str, int]) -> str:
    return ", ".join(f"{name} ({_tracks(n)})" for name, n in licences.items()) or "none"


def base_licence(cfg: Any) -> str | None:
    """The licence of the base model's weights when tunekit knows it (the tiny random stand-ins have none)."""
    from tunekit.models.registry import find_spec

    if cfg.models.tiny:
        return None
    spec = find_spec(cfg.model.name)
    return spec.license if spec is not None else None


def card_licence(data: dict[str, Any], base_licence_id: str | None) -> dict[str, str]:
    """The card's `license` (and `license_name` for `other`): the one licence whose terms include those of
    the base weights and of every training track (tunekit.corpus.license.combined_license)."""
    from tunekit.corpus.license import combined_license, hf_license_id, normalize_license

    names = list(data["licences"]) + ([base_licence_id] if base_licence_id else [])
    combined = combined_license(normalize_license(n) for n in names)
    hub = hf_license_id(combined)
    if hub != "other":
        return {"license": hub}
    return {"license": "other", "license_name": (combined.id or "").lower() if combined else "multiple-licenses"}


def use_restrictions(data: dict[str, Any], base_licence_id: str | None, base: str, tiny: bool) -> list[str]:
    """The "Use restrictions" section: the NonCommercial, ShareAlike and NoDerivatives terms of the training
    tracks' licences and of the base weights, each naming the licences that impose it."""
    from tunekit.corpus.license import combined_license, normalize_license

    infos = {name: normalize_license(name) for name in data["licences"]}
    base_info = normalize_license(base_licence_id) if base_licence_id else None

    def who(flag: str) -> str:
        """Which training tracks (by licence) and whether the base weights carry the term `flag`."""
        parts = []
        named = {n: c for n, c in data["licences"].items() if getattr(infos[n], flag)}
        if named:
            parts.append(f"{_tracks(sum(named.values()))} of the training data ({', '.join(named)})")
        if base_info is not None and getattr(base_info, flag):
            parts.append(f"the base model's weights ({base_info.id})")
        return " and ".join(parts)

    nc, sa, nd = who("non_commercial"), who("share_alike"), who("no_derivatives")
    combined = combined_license([*infos.values(), *([base_info] if base_info else [])])
    sources = "the training data" + (" and the base weights" if base_info else "")
    lines = ["## Use restrictions", ""]
    if combined is not None:
        lines.append(f"The licences of {sources} combine (the most restrictive terms win) into {combined.label}"
                     + (f" ({combined.url})" if combined.url else "") + ": use this model and its outputs under "
                     "its terms.")
    else:
        lines.append(f"No single licence covers {sources}: the terms of every licence below apply at once.")
    lines.append("")
    if nc:
        lines.append(f"- **NonCommercial**: {nc} may not be used commercially: neither this model nor the audio "
                     "it generates may be used for commercial purposes.")
    if sa:
        under = combined.label if combined is not None else "the licence of the works it adapts"
        lines.append(f"- **ShareAlike**: {sa} require adaptations to be shared under the same licence: if you "
                     f"share this model or audio it generates as an adaptation, license it under {under}.")
    if nd:
        lines.append(f"- **NoDerivatives**: {nd} may not be adapted: do not share this model or its outputs if "
                     "they are adaptations of those works.")
    credited = {n: c for n, c in data["licences"].items() if infos[n].requires_attribution}
    if credited:
        lines.append(f"- **Attribution**: {_tracks(sum(credited.values()))} of the training data "
                     f"({', '.join(credited)}) ask for credit: share `attribution.csv` (the credits below) with "
                     "this model and with anything made from it.")
    if base_info is not None and base_info.requires_attribution:
        lines.append(f"- **Attribution**: credit the base model `{base}` ({base_info.id}).")
    unknown = {n: c for n, c in data["licences"].items() if infos[n].family in ("other", "unknown")}
    if unknown:
        lines.append(f"- **Unrecognised licences**: {_tracks(sum(unknown.values()))} ({', '.join(unknown)}): "
                     "read their terms before any use.")
    if not (nc or sa or nd or unknown):
        lines.append(f"- No NonCommercial, ShareAlike or NoDerivatives terms apply to {sources}.")
    if base_info is None:
        lines.append("- The base model here is a tiny random stand-in with no licence of its own." if tiny else
                     f"- The licence of the base model `{base}` also applies; tunekit does not know it.")
    return lines


def _front_matter(cfg: Any, base: str, licence: dict[str, str], library: str, relation: str | None = None) -> str:
    """Hugging Face card metadata (YAML between `---` lines)."""
    import yaml

    from tunekit.models.hub import is_local_path

    from tunekit.train.methods import build_method

    full = build_method(cfg.method).full
    meta: dict[str, Any] = dict(licence)
    if not is_local_path(base):
        meta["base_model"] = base
        meta["base_model_relation"] = relation or ("adapter" if library == "peft" else "finetune")
    meta["library_name"] = library
    meta["pipeline_tag"] = "text-to-audio"
    meta["tags"] = ["tunekit", str(cfg.model.family), "text-to-audio", "full-fine-tune" if full else "lora"]
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---"


def _credits(rows: list[dict[str, str]]) -> list[str]:
    lines = []
    for row in rows[:50]:
        credit = row.get("credit") or row.get("attribution")  # prep writes the licence into the credit
        if credit:
            lines.append(f"- {credit}")
        else:
            who = " - ".join(x for x in (row.get("artist"), row.get("title")) if x) or row.get("track_id", "")
            lines.append(f"- {who}" + (f" ({row['license']})" if row.get("license") else ""))
    if len(rows) > 50:
        lines.append(f"- … and {len(rows) - 50} more")
    return lines


def model_card(
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
    library: str | None = None,
    inputs: str | None = None,
    usage: str | None = None,
    relation: str | None = None,
) -> str:
    """The model card's text: Hugging Face front matter, base model, recipe, data (licences of the training
    tracks, evaluation-only tracks apart), use restrictions, attribution, metrics and a working snippet.

    `base` is the configured model id; `base_path` what loads it here (the tiny stand-in's folder with
    models=tiny). `library` is the front matter's `library_name` (default: peft for LoRA, transformers for full).
    `inputs` says what the model trained on and `usage` how to run it (default: MusicGen's tokens and snippet);
    `relation` is the front matter's `base_model_relation` (default: adapter for a peft library, else finetune).
    """
    from tunekit.train.methods import build_method

    how = build_method(cfg.method)
    full, method = how.full, how.card(trainable, total)
    t = cfg.trainer
    licence_id = base_licence(cfg)
    licence = card_licence(data, licence_id)
    lines = [
        _front_matter(cfg, base, licence, library or ("transformers" if full else "peft"), relation),
        "",
        f"# {run_dir.name}",
        "",
        (f"A fine-tune of [{base}](https://huggingface.co/{base}) made with tunekit" if "/" in base and not
         Path(base).exists() else f"A fine-tune of `{base}` made with tunekit")
        + (f" (recipe `{cfg.recipe_name}`)." if cfg.recipe_name else "."),
        "",
        "## Training",
        "",
        f"- base model: `{base}`" + (" (tiny random stand-in, for tests)" if cfg.models.tiny else "")
        + (f", weights licensed {licence_id}" if licence_id else ""),
        f"- method: {method}",
        f"- steps: {metrics.get('step')} x global batch {metrics.get('global_batch')} "
        f"({t.batch_size} per device x {t.grad_accum} accumulation x {metrics.get('world_size', 1)} devices), "
        + (inputs or f"{data['codec']} tokens, crops of {cfg.data.crop_seconds:g} s"),
        f"- optimiser: AdamW lr {t.lr:g} (betas {list(t.betas)}, weight decay {t.weight_decay:g}), "
        f"{t.schedule} schedule with warmup {t.warmup:g}, grad clip {t.grad_clip:g}, "
        f"precision {metrics.get('precision')}",
        f"- classifier-free guidance dropout: {t.cond_dropout:g} per sample"
        + (f"; EMA {t.ema_decay:g} every {t.ema_every} steps" if t.ema_decay > 0 else ""),
        "",
        "## Data",
        "",
        f"- prepared data: `{data['path']}`" + (f" (pipeline `{data['pipeline']}`)" if data.get("pipeline") else ""),
        f"- training: {data['train_windows']} windows from {_tracks(data['train_tracks'])} "
        f"({data['train_hours']:.2f} h); validation: {data['valid_windows']} windows from "
        f"{_tracks(data['valid_tracks'])} (split by track)",
        f"- licences of the training tracks: {_counts(data['licences'])}",
        f"- evaluation only (validation and test tracks, never trained on): {_tracks(data['eval_tracks'])}"
        + (f": {_counts(data['eval_licences'])}" if data["eval_tracks"] else ""),
        "",
        *use_restrictions(data, licence_id, base, bool(cfg.models.tiny)),
    ]
    trained = set(data.get("train_track_ids", []))
    evaluated = set(data.get("eval_track_ids", []))
    train_credits = [r for r in attribution if not r.get("track_id") or r["track_id"] in trained]
    eval_credits = [r for r in attribution if r.get("track_id") in evaluated]
    if train_credits:
        lines += ["", "### Attribution", "", "The training audio includes (all credits in `attribution.csv`):", ""]
        lines += _credits(train_credits)
    if eval_credits:
        lines += ["", "### Evaluation-only tracks", "",
                  "Used for validation and test only, never trained on (credits in `attribution.csv`):", ""]
        lines += _credits(eval_credits)
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
        usage or _snippet(run_dir, base_path, full, bool(cfg.models.tiny)),
        "",
        "The full training configuration is in `config.yaml`; re-running the same `tunekit train` command "
        "resumes or reproduces the run.",
        "",
    ]
    return "\n".join(lines)


def write_model_card(run_dir: Path, folders: dict[str, str] | None = None, **card: Any) -> Path:
    """`<run>/README.md` (see `model_card`), and the same card in every exported weights folder of `folders`
    (folder -> the library its front matter names; MusicGen's: `adapter/` peft, replacing peft's blank template,
    `model/` and `merged/` transformers). `adapter/` is an adapter of the base model, the others fine-tunes."""
    path = run_dir / "README.md"
    write_text(path, model_card(run_dir, **card))
    for folder, library in (folders or MUSICGEN_FOLDERS).items():
        if (run_dir / folder).is_dir():
            relation = "adapter" if folder == "adapter" else "finetune"
            write_text(run_dir / folder / "README.md",
                       model_card(run_dir, **{**card, "library": library, "relation": relation}))
    return path
