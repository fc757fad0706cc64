"""`tunekit train`: dispatch a validated TrainConfig to the trainer of its model family."""

from __future__ import annotations

from typing import Any

from tunekit.errors import ConfigError, ConfigErrors


def run_train(cfg: Any) -> int:
    """Train (or resume) the run described by `cfg` with its family's trainer; returns the exit code."""
    from tunekit.families import family_of_model, get_family
    from tunekit.train.config import TrainConfig

    problems = TrainConfig.problems(cfg)
    if problems:
        raise ConfigErrors(problems)
    family = get_family(cfg.model.family)
    checkpoint = family_of_model(cfg.model.name, key="model.name")
    if checkpoint.name != family.name:
        raise ConfigError(
            f"model.name={cfg.model.name} is a {checkpoint.name} checkpoint but model={family.name}; "
            f"choose model={checkpoint.name}, or a {family.name} checkpoint: "
            + ", ".join(v.id for v in family.variants()),
            key="model.name",
        )
    return family.part("trainer")(cfg)
