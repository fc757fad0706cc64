"""`tunekit train`: dispatch a validated TrainConfig to the trainer of its model family."""

from __future__ import annotations

from typing import Any

from tunekit.errors import ConfigError, ConfigErrors


def run_train(cfg: Any) -> int:
    """Train (or resume) the run described by `cfg`; returns the exit code."""
    from tunekit.train.config import TrainConfig

    problems = TrainConfig.problems(cfg)
    if problems:
        raise ConfigErrors(problems)
    from tunekit.models.registry import find_spec

    spec = find_spec(cfg.model.name)
    if spec is not None and spec.family not in ("musicgen", "musicgen_melody"):
        raise ConfigError(
            f"model.name={cfg.model.name} is a {spec.family} model; `tunekit train` fine-tunes MusicGen "
            "(facebook/musicgen-small, -medium, -large, -melody, -stereo-*)",
            key="model.name",
        )
    from tunekit.train.musicgen import train_musicgen

    return train_musicgen(cfg)
