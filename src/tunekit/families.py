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

`tunekit train model=<option>` selects a family and its checkpoint (configs/model/<option>.yaml: musicgen,
acestep-1.5-turbo, …; configs/model/train/<option>.yaml holds what that choice sets for training);
`tunekit ls families` lists them with their variants. Parts are 'module:attr' strings, imported only when used.
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

    name: str  # e.g. musicgen; the `model=` options (configs/model/) name it as their `family`
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
    note: str = ""  # one line `tunekit ls` adds (what is not supported, and why)

    def part(self, which: str) -> Any:
        """Import and return one of the 'module:attr' parts (dataset, trainer, sampler)."""
        module, _, attr = getattr(self, which).partition(":")
        return getattr(importlib.import_module(module), attr)

    def default_checkpoint(self) -> str:
        """The checkpoint `model.name=null` means (the model registry's default for this family)."""
        from tunekit.models.registry import DEFAULTS

        return DEFAULTS[self.name]

    def options(self) -> list[str]:
        """Its `model=` options (configs/model/<option>.yaml whose `family` is this one), the default's first."""
        mine = [k for k, v in model_options().items() if v.get("family") == self.name]
        default = [k for k in mine if model_options()[k].get("name") in (None, self.default_checkpoint())]
        return default[:1] + [k for k in mine if k not in default[:1]]

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
        Family(
            name="acestep",
            summary="ACE-Step 1.5 (diffusers): a flow-matching DiT over 48 kHz stereo VAE latents, with vocals and "
            "lyrics; LoRA or full fine-tuning of the DiT",
            loaders=("acestep",),
            pipeline="acestep",
            prep_tail="latents",
            dataset="tunekit.data.latents:LatentSet",
            trainer="tunekit.train.acestep:train_acestep",
            sampler="tunekit.models.acestep:AceStepSampler",
            run_formats=("diffusers LoRA + official PEFT adapter (adapter/)", "diffusers DiT (model/transformer/)"),
            dataset_exports=("hf",),
            note="ACE-Step v1 (3.5B) is not supported: diffusers has no pipeline for it",
        ),
    ]
}
DEFAULT_FAMILY = "musicgen"
PIPELINE_LOADERS = {"AceStepPipeline": "acestep"}  # a diffusers folder's model_index.json class -> its loader


def get_family(name: str, key: str = "model.family") -> Family:
    """The family called `name`; a ConfigError naming `key` and the choices otherwise."""
    if name not in FAMILIES:
        raise ConfigError(f"unknown model family '{name}'; available: {', '.join(FAMILIES)}", key=key)
    return FAMILIES[name]


def family_of_model(name: str, key: str = "model") -> Family:
    """The family whose generators include `name`: a registry id, or a local checkpoint folder whose
    config.json (transformers) or model_index.json (diffusers) names a model a family loads. Unknown hub ids default to MusicGen (its loader then
    says clearly when the checkpoint is something else)."""
    from tunekit.models.registry import find_spec

    import json

    spec = find_spec(name)
    loader = spec.loader if spec is not None else None
    folder = Path(name).expanduser()
    if loader is None and (folder / "model_index.json").is_file():  # a diffusers pipeline folder
        pipeline = json.loads((folder / "model_index.json").read_text()).get("_class_name")
        loader = PIPELINE_LOADERS.get(pipeline, pipeline)
    elif loader is None and (folder / "config.json").is_file():  # a transformers checkpoint folder
        loader = json.loads((folder / "config.json").read_text()).get("model_type")
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


def model_options() -> dict[str, dict[str, Any]]:
    """Every `model=` option: configs/model/<option>.yaml's `family` and `name` (its checkpoint; null: the family's
    default). Training defaults per option live beside them in configs/model/train/<option>.yaml."""
    from omegaconf import OmegaConf

    from tunekit.paths import resource_dir

    folder = resource_dir("configs") / "model"
    return {p.stem: OmegaConf.to_container(OmegaConf.load(p)) for p in sorted(folder.glob("*.yaml"))}


def option_for_checkpoint(name: str, key: str = "model") -> str:
    """The `model=` option a checkpoint belongs to: the option that names it, else the option of its variant
    (an ACE-Step folder's transformer config says turbo, base or sft), else its family's first option."""
    family = family_of_model(name, key=key)
    options = family.options()
    named = [k for k in options if model_options()[k].get("name") == name]
    if named:
        return named[0]
    if family.name == "acestep":
        from tunekit.models.acestep import folder_variant

        variant = folder_variant(name)
        matching = [k for k in options if variant and k.endswith(f"-{variant}")]
        if matching:
            return matching[0]
    return options[0]


def family_of_run(run: str | Path, key: str = "run") -> Family:
    """The family a `tunekit train` run folder was trained as (its config.yaml's model.family)."""
    from omegaconf import OmegaConf

    config = Path(run).expanduser() / "config.yaml"
    if not config.is_file():
        raise ConfigError(f"{key}={run} is not a tunekit run folder: no config.yaml (run `tunekit train` first)",
                          key=key)
    model = OmegaConf.load(config).get("model", {}) or {}
    return get_family(str(model.get("family", DEFAULT_FAMILY)), key=key)
