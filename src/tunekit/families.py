"""Model families: what each generator family provides, in one small registry.

A family is everything tunekit needs to take one kind of generator from prepared data to an evaluated
fine-tune. The verbs look a family up here and call its parts; nothing else in tunekit branches on the
family, so a second family is a new entry and new modules, not a new `if` in every file:

    prep      pipelines/<pipeline>.yaml, whose last stage (`prep_tail`) writes the family's training inputs
    train     `dataset` reads them; `trainer(cfg) -> exit code` fine-tunes (one readable file per family)
    generate  `sampler`: `.load(run=… | model=…)` then `.generate(prompts, seconds, seed=…, **options)`
    eval run= the same sampler for the base and the fine-tuned model; its `codec` gives the reconstruction floor
    export    `run_formats` (what a run writes that other tools load) and `dataset_exports` (`tunekit export format=`)
    tiny      every variant and companion model has a tiny random stand-in (`models=tiny`)

`tunekit train model=<family>` selects the family (configs/model/<family>.yaml); `tunekit ls families`
lists them with their variants. Parts are 'module:attr' strings, imported only when used.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunekit.errors import ConfigError


@dataclass(frozen=True)
class Family:
    """One generator family and the parts tunekit uses for it."""

    name: str  # what `model=` selects, e.g. musicgen
    summary: str  # one line for `tunekit ls`
    loaders: tuple[str, ...]  # the model registry's loaders (ModelSpec.loader) of this family's generators
    pipeline: str  # the prep pipeline (pipelines/<name>.yaml) whose output it trains on
    prep_tail: str  # the prep stage that writes its training inputs (the pipeline's last stage)
    dataset: str  # 'module:attr' of the training dataset over a prep output
    trainer: str  # 'module:attr' of `train(cfg) -> int`
    sampler: str  # 'module:attr' of the sampler class (load, generate, codec, codec_layout)
    run_formats: tuple[str, ...]  # what a finished run writes for other tools
    dataset_exports: tuple[str, ...]  # `tunekit export format=` choices that suit its prep output
    companions: tuple[str, ...] = ()  # other models it needs (codec, VAE), by registry id

    def part(self, which: str) -> Any:
        """Import and return one of the 'module:attr' parts (dataset, trainer, sampler)."""
        module, _, attr = getattr(self, which).partition(":")
        return getattr(importlib.import_module(module), attr)

    def default_checkpoint(self) -> str:
        """The checkpoint `model.name=null` means (the model registry's default for this family)."""
        from tunekit.models.registry import DEFAULTS

        return DEFAULTS[self.name]

    def variants(self) -> list[Any]:
        """The registry's generators of this family (ModelSpec), in registry order."""
        from tunekit.models.registry import MODELS

        return [m for m in MODELS if m.role == "generator" and m.loader in self.loaders]

    def tiny_models(self) -> list[str]:
        """Folders under <cache>/tiny/ of the tiny stand-ins of its variants and companions."""
        from tunekit.models.registry import find_spec

        specs = [*self.variants(), *(find_spec(c) for c in self.companions)]
        return sorted({s.tiny_name for s in specs if s is not None})


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in [
        Family(
            name="musicgen",
            summary="MusicGen (transformers): a text-conditioned transformer over EnCodec 32 kHz tokens; "
            "LoRA or full fine-tuning of the decoder",
            loaders=("musicgen", "musicgen_melody"),
            pipeline="musicgen",
            prep_tail="tokens",
            dataset="tunekit.data.tokens:TokenSet",
            trainer="tunekit.train.musicgen:train_musicgen",
            sampler="tunekit.models.musicgen:MusicgenSampler",
            run_formats=("peft LoRA adapter (adapter/)", "transformers model (model/, merged/)"),
            dataset_exports=("audiocraft", "hf"),
            companions=("facebook/encodec_32khz",),
        ),
    ]
}
DEFAULT_FAMILY = "musicgen"


def get_family(name: str, key: str = "model.family") -> Family:
    """The family called `name`; a ConfigError naming `key` and the choices otherwise."""
    if name not in FAMILIES:
        raise ConfigError(f"unknown model family '{name}'; available: {', '.join(FAMILIES)}", key=key)
    return FAMILIES[name]


def family_of_model(name: str, key: str = "model") -> Family:
    """The family whose generators include `name`: a registry id, or a local checkpoint folder whose
    config.json names a model type a family loads. Unknown hub ids default to MusicGen (its loader then
    says clearly when the checkpoint is something else)."""
    from tunekit.models.registry import find_spec

    spec = find_spec(name)
    loader = spec.loader if spec is not None else None
    config = Path(name).expanduser() / "config.json"
    if loader is None and config.is_file():
        import json

        loader = json.loads(config.read_text()).get("model_type")
    if loader is None:
        return FAMILIES[DEFAULT_FAMILY]
    for family in FAMILIES.values():
        if loader in family.loaders:
            return family
    raise ConfigError(
        f"{key}={name} is a {loader} model, not a generator tunekit fine-tunes; families: "
        + "; ".join(f"{f.name} ({', '.join(v.id for v in f.variants())})" for f in FAMILIES.values()),
        key=key,
    )


def family_of_run(run: str | Path, key: str = "run") -> Family:
    """The family a `tunekit train` run folder was trained as (its config.yaml's model.family)."""
    from omegaconf import OmegaConf

    config = Path(run).expanduser() / "config.yaml"
    if not config.is_file():
        raise ConfigError(f"{key}={run} is not a tunekit run folder: no config.yaml (run `tunekit train` first)",
                          key=key)
    model = OmegaConf.load(config).get("model", {}) or {}
    return get_family(str(model.get("family", DEFAULT_FAMILY)), key=key)
