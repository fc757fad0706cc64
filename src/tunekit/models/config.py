"""Schema of the `models` config group (configs/models/*.yaml)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ModelsConfig:
    """Which weights every model loader uses."""

    tiny: bool = False  # true: swap each pretrained id for a tiny random model of the same class (offline, tests)
    cache_dir: str | None = None  # where tiny models are built (<cache_dir>/tiny/<name>/); null: tunekit's cache dir
