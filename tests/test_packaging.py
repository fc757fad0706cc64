"""The wheel ships configs, pipelines and recipes, and an installed (non-editable) tunekit finds them."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tunekit.paths import resource_dir


@pytest.fixture(scope="module")
def wheel(tmp_path_factory, repo_root: Path) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(repo_root)],
        check=True,
        capture_output=True,
    )
    (whl,) = out.glob("tunekit-*.whl")
    return whl


def test_wheel_contains_every_config_pipeline_and_recipe(wheel: Path):
    names = set(zipfile.ZipFile(wheel).namelist())
    for kind in ("configs", "pipelines", "recipes"):
        files = [p for p in resource_dir(kind).rglob("*") if p.is_file()]
        assert files, kind
        for p in files:
            rel = p.relative_to(resource_dir(kind)).as_posix()
            assert f"tunekit/_resources/{kind}/{rel}" in names, rel


def test_installed_wheel_uses_its_own_resources(wheel: Path, tmp_path: Path):
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    code = "from tunekit.paths import resource_dir; print(resource_dir('recipes'))"
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, check=True)
    assert Path(out.stdout.strip()) == site / "tunekit" / "_resources" / "recipes"
    res = subprocess.run([sys.executable, "-m", "tunekit", "ls"], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    for recipe in resource_dir("recipes").glob("*.yaml"):
        assert recipe.stem in res.stdout
