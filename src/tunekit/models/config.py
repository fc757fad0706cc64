"""Schemas of the `models` config group (configs/models/*.yaml) and of the `model` group (configs/model/*.yaml)."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING


@dataclass
class ModelChoice:
    """The generator: its family (`model=<family>`) and checkpoint (`model.name=`)."""

    family: str = MISSING  # set by model=<option> (configs/model/): musicgen | acestep; `tunekit ls families`
    # checkpoint: hub id or folder (facebook/musicgen-small/-medium/…, ACE-Step/…); null: the family's default
    # (facebook/musicgen-small; ACE-Step 1.5 XL turbo)
    name: str | None = None


@dataclass
class ModelsConfig:
    """Which weights every model loader uses."""

    tiny: bool = False  # true: swap each pretrained id for a tiny random model of the same class (offline, tests)
    cache_dir: str | None = None  # where tiny models are built (<cache_dir>/tiny/<name>/); null: tunekit's cache dir
