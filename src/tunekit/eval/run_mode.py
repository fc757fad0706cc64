"""`tunekit eval run=<run dir>`: base vs fine-tuned on the run's held-out data.

1. Read `<run>/config.yaml` (written by `tunekit train`): the dataset (`data.path`), the base model
   (`model.name`, `models.tiny`) and the W&B project (`logger.project`: the evaluation is logged there,
   grouped with the run; the eval config's own `logger.project` applies when the run has none).
2. Prompts: the captions of the dataset's held-out windows (`reference_splits`, default `test`: tracks
   neither trained on nor used for validation), evenly spread when `n_samples` limits them. Each
   generated clip is named after the window whose caption prompted it.
3. Lengths: clips are generated `duration` seconds long, by default the median length of the held-out
   windows; windows longer than that are cropped to their first `duration` seconds, so generated and
   reference audio have equal length and FAD/KAD compare like with like.
4. Generate every prompt with the base model and with the fine-tuned one, with the run's family sampler
   (given by the verb from `tunekit.families`; MusicGen's loads the run's LoRA adapter merged into its
   base, or its full model): same prompts, same seeds, same decoding settings. A model that takes a melody
   (`takes_melody`, MusicGen-melody) gets the chroma of the prompt's own held-out window (its first
   `duration` seconds), as audiocraft evaluates melody models. Audio goes to
   `<run>/eval/audio/{base,finetuned}/` and is reused when the settings and models are unchanged.
5. Score both against all held-out windows (the reference), with the reconstruction floor from the
   generator's own codec, and, for melody models, the chroma cosine similarity of each clip to its melody;
   compare them prompt by prompt (fine-tuned − base per metric, with a bootstrap interval over the prompts),
   and write `<run>/eval/metrics.json`, `report.html` and a W&B run.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tunekit.errors import ConfigError
from tunekit.eval.config import EvalConfig
from tunekit.eval.score import log
from tunekit.eval.sets import AudioItem, AudioSet, load_set

SETS = ("base", "finetuned")


def read_run_config(run: Path) -> Any:
    """The training run's resolved config (`<run>/config.yaml`)."""
    from omegaconf import OmegaConf

    path = run / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"run={run} is not a tunekit run folder: no config.yaml (run `tunekit train` first)", key="run")
    return OmegaConf.load(path)


def dataset_path(run: Path, train_cfg: Any, override: str | None) -> Path:
    """The prep output the run trained on (`reference=` overrides it); relative paths are tried from the
    working directory, then from the run folder's parent."""
    if override:
        return Path(override).expanduser()
    raw = train_cfg.get("data", {}).get("path")
    if not raw:
        raise ConfigError(f"{run}/config.yaml has no data.path; pass reference=<prep output>", key="reference")
    path = Path(str(raw)).expanduser()
    for candidate in (path, run.parent / path, run / path):
        if (candidate / "windows.parquet").is_file():
            return candidate
    raise ConfigError(
        f"the run's dataset {raw} (data.path in {run}/config.yaml) is not found; pass reference=<prep output>",
        key="reference",
    )


def choose_prompts(reference: AudioSet, n: int) -> list[AudioItem]:
    """Held-out windows with a caption; `n` > 0 keeps n of them evenly spread over the (id-sorted) list."""
    captioned = [i for i in reference.items if i.prompt]
    if not captioned:
        raise ConfigError(
            f"no held-out window of {reference.root} has a caption (splits {list(reference.splits)}); "
            "run `tunekit prep` with the captions stage",
            key="reference_splits",
        )
    if n <= 0 or n >= len(captioned):
        return captioned
    step = len(captioned) / n
    return [captioned[int(k * step)] for k in range(n)]


def clip_seconds(config: EvalConfig, reference: AudioSet) -> float:
    """Seconds generated per prompt: `duration`, or the median length of the reference windows."""
    if config.duration is not None:
        return float(config.duration)
    return float(statistics.median(reference.seconds()))


def crop_reference(reference: AudioSet, seconds: float) -> tuple[AudioSet, int]:
    """The reference with every clip longer than `seconds` cut to its first `seconds`; also how many were cut."""
    lengths = reference.seconds()
    items = [
        dataclasses.replace(item, duration_s=seconds) if length > seconds + 1e-6 else item
        for item, length in zip(reference.items, lengths, strict=True)
    ]
    cut = sum(1 for length in lengths if length > seconds + 1e-6)
    return dataclasses.replace(reference, items=items, _hash=None), cut


MELODY_SOURCE = "chroma of the prompt's held-out window (models that take a melody)"


def melody_batch(items: list[AudioItem]) -> Any:
    """(B, frames, 12) float32 tensor of the windows' melody chroma; shorter ones are repeated to the longest,
    as MusicGen-melody repeats a short melody to its chroma length."""
    import numpy as np
    import torch

    from tunekit.eval.chroma_cosine import melody_features

    chromas = [melody_features(*item.load()) for item in items]
    longest = max(len(c) for c in chromas)
    tiled = [np.tile(c, (-(-longest // len(c)), 1))[:longest] for c in chromas]
    return torch.from_numpy(np.stack(tiled).astype(np.float32))


def generate_set(
    which: str,
    load: Any,
    prompts: list[AudioItem],
    folder: Path,
    config: EvalConfig,
    device: Any,
    identity: dict[str, Any],
    seconds: float,
    melodies: Mapping[str, AudioItem] | None = None,
) -> tuple[AudioSet, dict[str, Any]]:
    """Generate one clip of `seconds` per prompt into `folder` (reused when `identity` and the settings match);
    `load()` returns the family's sampler. A sampler that `takes_melody` is given the chroma of `melodies[id]`
    for each prompt; the manifest's `melody` says whether it was."""
    import numpy as np

    from tunekit.atomic import write_json
    from tunekit.audio.io import write_audio

    settings = {
        "prompts": {p.id: p.prompt for p in prompts},
        "seed": config.seed,
        "batch_size": config.batch_size,
        "duration": seconds,
        "guidance": config.guidance_scale,
        "top_k": config.top_k,
        "temperature": config.temperature,
        "steps": config.steps,
        "shift": config.shift,
        "melody": MELODY_SOURCE if melodies is not None else None,
        **identity,
    }
    manifest = folder / "generation.json"
    paths = {p.id: folder / f"{p.id}.wav" for p in prompts}
    info: dict[str, Any] | None = None
    if manifest.is_file() and all(path.is_file() for path in paths.values()):
        saved = json.loads(manifest.read_text())
        if saved.get("settings") == json.loads(json.dumps(settings)):
            log(f"{which}: reusing {len(prompts)} clips in {folder}")
            info = saved
    if info is None:
        sampler = load()
        what = sampler.description
        melody = melodies is not None and bool(getattr(sampler, "takes_melody", False))
        log(f"{which}: generating {len(prompts)} clips of {seconds:g} s with {what}"
            + (", each conditioned on its window's melody" if melody else ""))
        seeds: dict[str, int] = {}
        for first in range(0, len(prompts), config.batch_size):
            batch = prompts[first : first + config.batch_size]
            seed = config.seed + first
            chroma = melody_batch([melodies[p.id] for p in batch]) if melody else None
            audio, rate = sampler.generate(
                [p.prompt for p in batch], seconds, seed=seed,
                guidance_scale=config.guidance_scale, top_k=config.top_k, top_p=0.0, temperature=config.temperature,
                steps=config.steps, shift=config.shift, chroma=chroma,
            )
            for item, clip in zip(batch, audio, strict=True):
                peak = float(np.max(np.abs(clip))) if clip.size else 0.0
                write_audio(paths[item.id], clip / peak * 0.99 if peak > 0.99 else clip, rate, subtype="FLOAT")
                seeds[item.id] = seed
            if len(prompts) > config.batch_size:
                log(f"{which}: {len(seeds)}/{len(prompts)} clips")
        info = {"settings": settings, "model": what, "seeds": seeds, "rate": rate, "melody": melody}
        write_json(manifest, info)
        del sampler
        gc.collect()
    items = [AudioItem(id=p.id, path=paths[p.id], prompt=p.prompt) for p in prompts]
    return AudioSet(name=which, root=folder, kind="folder", items=items), info


def generator_codec(sampler: Any, base_path: str, loaded: dict[str, Any], load_base: Any) -> Any:
    """The base generator's own codec (the sampler's `codec`) for the reconstruction floor, loaded only if needed.

    Its cache id is the family and the base checkpoint's digest; stereo and codebooks come from its config.
    """
    from tunekit.eval.reconstruction import CodecSource
    from tunekit.models.digest import model_digest

    stereo, codebooks = sampler.codec_layout(base_path)

    def load() -> Any:
        if "module" not in loaded:
            load_base()
        return loaded["module"]

    return CodecSource(id=f"{sampler.name}:{model_digest(base_path)}", load=load, stereo=stereo, codebooks=codebooks,
                       round_trip=getattr(sampler, "round_trip", None))


def _training_records(run: Path) -> list[dict[str, Any]]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def run_on_training_run(config: EvalConfig, sampler: Any) -> int:
    """Generate with base and fine-tuned (`sampler`: the run's family sampler class), score both, write
    <run>/eval/{metrics.json, report.html} and W&B."""
    import torch

    from tunekit.eval.evaluate import evaluate
    from tunekit.eval.outputs import METRICS_FILE, REPORT_FILE, write_outputs
    from tunekit.eval.report import render_report
    from tunekit.models.device import resolve_device

    run = Path(config.run).expanduser()
    train_cfg = read_run_config(run)
    base_name = str(train_cfg.model.name)
    reference = load_set(dataset_path(run, train_cfg, config.reference), name="reference", key="reference",
                         splits=config.reference_splits)
    prompts = choose_prompts(reference, config.n_samples)
    seconds = clip_seconds(config, reference)
    reference, n_cropped = crop_reference(reference, seconds)
    out = Path(config.out).expanduser() if config.out else run / "eval"
    device = torch.device(resolve_device(config.device))

    codec: dict[str, Any] = {}
    models_cfg = train_cfg.get("models", {}) or {}

    def load_base() -> Any:
        base = sampler.load(
            model=base_name, tiny=bool(models_cfg.get("tiny", False)), cache_dir=models_cfg.get("cache_dir"),
            device=device,
        )
        codec["module"] = base.codec
        return base

    def load_finetuned() -> Any:
        return sampler.load(run, device=device)

    # What the fine-tuned model is: its weights and adapter config (not the model card, which records timings).
    finetuned_files = sorted(
        p for p in (run / "adapter").glob("*") if p.is_file() and (p.suffix == ".safetensors" or p.name == "adapter_config.json")
    ) + sorted(p for p in (run / "model").glob("*.safetensors") if p.is_file())
    if not finetuned_files:
        raise ConfigError(
            f"run={run} has no adapter/ or model/ yet: the run has not finished; resume it with the same "
            "`tunekit train` command, or wait for it to end",
            key="run",
        )
    from tunekit.models.digest import model_digest
    from tunekit.models.registry import resolve

    base_path = resolve(base_name, tiny=bool(models_cfg.get("tiny", False)), cache_dir=models_cfg.get("cache_dir"))
    identities = {
        "base": {"model": base_name, "tiny": bool(models_cfg.get("tiny", False))},
        "finetuned": {"run": str(run.resolve()),
                      "weights": hashlib.sha256("".join(model_digest(p) for p in finetuned_files).encode()).hexdigest()},
    }
    # Everything FAD needs is checked before minutes of generation: frames per embedding on both sides.
    from tunekit.errors import ConfigErrors
    from tunekit.eval.evaluate import load_embedders, sample_size_problems

    embedders = load_embedders(config)
    problems = sample_size_problems(embedders, {
        "generated": ([seconds] * len(prompts),
                      f"generate more or longer clips (n_samples={config.n_samples or len(prompts)} held-out "
                      f"prompts, duration={seconds:g})"),
        "reference": (reference.seconds(),
                      f"hold out more tracks (reference_splits={list(config.reference_splits)} has "
                      f"{len(reference.items)} windows; e.g. reference_splits=[valid,test])"),
    })
    if problems:
        raise ConfigErrors(problems)
    generated: dict[str, AudioSet] = {}
    infos: dict[str, Any] = {}
    windows = {item.id: item for item in reference.items}  # cropped to `seconds`: the melodies a melody model gets
    for which, load in (("base", load_base), ("finetuned", load_finetuned)):
        generated[which], infos[which] = generate_set(
            which, load, prompts, out / "audio" / which, config, device, identities[which], seconds, windows
        )
    melodic = all(infos[which].get("melody") for which in SETS)
    metrics, scores = evaluate(config, generated, reference, codec=generator_codec(sampler, base_path, codec, load_base),
                               embedders=embedders, paired=SETS, melodies=windows if melodic else None)
    metrics["mode"] = "run"
    metrics["run"] = str(run)
    metrics["models"].update({
        "generator_base": base_name,
        "generator_base_path": str(base_path),
        "generator_finetuned": infos["finetuned"].get("model"),
        "generator_tiny": bool(models_cfg.get("tiny", False)),
    })
    metrics["generation"] = {
        "duration": seconds,
        "duration_source": "set by duration=" if config.duration is not None else "median length of the reference windows",
        "guidance": config.guidance_scale, "top_k": config.top_k, "steps": config.steps, "shift": config.shift,
        "temperature": config.temperature, "batch_size": config.batch_size,
        "seeds": infos["base"].get("seeds", {}), "n_prompts": len(prompts),
        "prompt_source": f"captions of the held-out windows in splits {list(config.reference_splits)}",
        "melody": MELODY_SOURCE if melodic else None,
    }
    metrics["reference"]["crop"] = {"seconds": seconds, "cropped": n_cropped,
                                    "how": "windows longer than the generated clips keep their first `seconds`"}
    metrics["warnings"] = []
    shorter = sum(1 for s in reference.seconds() if s < seconds - 1e-6)
    if shorter:
        metrics["warnings"].append(f"{shorter} of {len(reference.items)} reference windows are shorter than the "
                                   f"{seconds:g} s generated clips (duration={seconds:g}): their lengths differ")
    if melodic != any(infos[which].get("melody") for which in SETS):
        metrics["warnings"].append("only one of base and fine-tuned was conditioned on melodies: no chroma cosine")
    if infos["base"].get("seeds") != infos["finetuned"].get("seeds"):
        metrics["warnings"].append("base and fine-tuned clips were generated with different seeds")
    html = render_report(metrics, scores, title=f"tunekit eval: {run.name} (base vs fine-tuned)",
                         embeddings=list(config.embeddings), n_clips=config.report_clips, reference=reference,
                         training=_training_records(run))
    write_outputs(out, metrics, html)
    if config.uses_wandb():
        from tunekit.eval.wandb_log import log_eval

        run_logger = train_cfg.get("logger", {}) or {}
        project = run_logger.get("project") or config.logger.project
        entity = run_logger.get("entity") if run_logger.get("project") else config.logger.entity
        log_eval(metrics, scores, project=str(project), entity=entity, mode=config.logger.mode, group=run.name,
                 run_name=f"{run.name}-eval", out_dir=out, embeddings=list(config.embeddings))
    log(f"wrote {out / METRICS_FILE} and {out / REPORT_FILE}")
    return 0
