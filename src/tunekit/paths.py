"""Where tunekit finds its shipped resources, the user's own recipes/pipelines, and its caches."""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent
RESOURCE_KINDS = ("configs", "pipelines", "recipes")


def resource_dir(kind: str) -> Path:
    """The shipped `configs/`, `pipelines/` or `recipes/` directory.

    In a source checkout (editable install) these are the top-level folders of the repository;
    in an installed wheel they live in `tunekit/_resources/`.
    """
    if kind not in RESOURCE_KINDS:
        raise ValueError(f"unknown resource kind {kind!r}; expected one of {RESOURCE_KINDS}")
    repo_root = _PACKAGE_DIR.parent.parent
    if _PACKAGE_DIR.parent.name == "src" and (repo_root / "pyproject.toml").is_file():
        return repo_root / kind
    return _PACKAGE_DIR / "_resources" / kind


def user_resource_dirs(kind: str, extra: list[str | os.PathLike[str]] | None = None) -> list[Path]:
    """User directories searched before the shipped ones: `./<kind>/` in the working directory,
    then each path in `$TUNEKIT_<KIND>_PATH` (os.pathsep-separated), then `extra`."""
    dirs: list[Path] = []
    cwd_dir = Path.cwd() / kind
    if cwd_dir.is_dir() and cwd_dir.resolve() != resource_dir(kind).resolve():
        dirs.append(cwd_dir)
    env = os.environ.get(f"TUNEKIT_{kind.upper()}_PATH", "")
    dirs += [Path(p) for p in env.split(os.pathsep) if p]
    dirs += [Path(p) for p in (extra or [])]
    return dirs


def cache_dir() -> Path:
    """tunekit's cache root: `$TUNEKIT_CACHE`, else `$XDG_CACHE_HOME/tunekit`, else `~/.cache/tunekit`."""
    if env := os.environ.get("TUNEKIT_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tunekit"
