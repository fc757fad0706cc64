"""`tunekit eval`: score generated audio against reference audio and write metrics.json + report.html.

Standalone:  tunekit eval generated=samples/ reference=data/ref/ out=out/eval [prompts=prompts.csv]
Run mode:    tunekit eval run=runs/lofi   (generates the held-out prompts with the base and the
             fine-tuned model, then scores both; see `tunekit.eval.run_mode`)
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from tunekit.errors import ConfigErrors
from tunekit.eval.config import EvalConfig
from tunekit.eval.evaluate import evaluate, load_embedders, sample_size_problems
from tunekit.eval.outputs import METRICS_FILE, REPORT_FILE, write_outputs
from tunekit.eval.score import log
from tunekit.eval.sets import attach_prompts, folder_set, load_prompts, load_set


def as_config(cfg: Any) -> EvalConfig:
    """An EvalConfig from a composed DictConfig (or an EvalConfig as is)."""
    if isinstance(cfg, EvalConfig):
        return cfg
    from omegaconf import OmegaConf

    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(EvalConfig), cfg))


def run_standalone(config: EvalConfig) -> int:
    """Score generated= against reference= into out=."""
    from tunekit.eval.report import render_report

    generated = folder_set(config.generated, name="generated", key="generated")
    warnings: list[str] = []
    if config.prompts:
        generated, missing = attach_prompts(generated, load_prompts(config.prompts))
        if len(missing) == len(generated.items):
            raise ConfigErrors([
                f"prompts={config.prompts}: no id matches a file in generated={config.generated} "
                f"(file ids look like {generated.items[0].id!r}); ids are file paths relative to the folder, "
                "without extension (key: prompts)"
            ])
        if missing:
            warnings.append(f"{len(missing)} generated clips have no prompt and are left out of the CLAP score: {missing[:5]}")
    reference = load_set(config.reference, name="reference", key="reference", splits=config.reference_splits)
    embedders = load_embedders(config)
    gen_seconds, ref_seconds = generated.seconds(), reference.seconds()
    problems = sample_size_problems(embedders, {
        "generated": (gen_seconds, f"add clips to generated={config.generated}"),
        "reference": (ref_seconds, f"add audio to reference={config.reference} or, for a prep output, "
                                   f"more splits (reference_splits=[valid,test])"),
    })
    if problems:
        raise ConfigErrors(problems)
    gen_len, ref_len = statistics.median(gen_seconds), statistics.median(ref_seconds)
    if abs(gen_len - ref_len) > 0.1 * max(gen_len, ref_len):
        warnings.append(f"generated clips are {gen_len:.3g} s long (median) and reference clips {ref_len:.3g} s: "
                        "FAD and KAD compare clips of different lengths; give both sets the same length")
    metrics, scores = evaluate(config, {"generated": generated}, reference, embedders=embedders)
    metrics["mode"] = "standalone"
    metrics["generated"]["source"] = str(generated.root)
    metrics["warnings"] = warnings
    out = Path(config.out).expanduser()
    html = render_report(metrics, scores, title="tunekit eval", embeddings=list(config.embeddings),
                         n_clips=config.report_clips, reference=reference)
    write_outputs(out, metrics, html)
    if config.uses_wandb():
        from tunekit.eval.wandb_log import log_eval

        log_eval(metrics, scores, project=config.logger.project, entity=config.logger.entity,
                 mode=config.logger.mode, run_name=f"eval-{out.name}", out_dir=out, embeddings=list(config.embeddings))
    log(f"wrote {out / METRICS_FILE} and {out / REPORT_FILE}")
    return 0


def run_eval(cfg: Any) -> int:
    """Entry point of `tunekit eval`: validates the config, then runs run mode or standalone mode."""
    config = as_config(cfg)
    problems = EvalConfig.problems(config)
    if problems:
        raise ConfigErrors(problems)
    if config.run:
        from tunekit.eval.run_mode import run_on_training_run
        from tunekit.families import family_of_run

        return run_on_training_run(config, family_of_run(config.run).part("sampler"))
    return run_standalone(config)
