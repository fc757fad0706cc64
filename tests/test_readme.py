"""The README's two set-up commands exist and the make targets they call work."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest


def _setup_commands(repo_root: Path) -> list[str]:
    text = (repo_root / "README.md").read_text()
    block = re.search(r"<!-- setup-commands -->\s*```(?:bash|sh)?\n(.*?)```", text, re.S)
    assert block, "README needs the set-up commands block"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.split("#")[0].strip()]


def test_readme_has_exactly_the_two_setup_commands(repo_root: Path):
    assert _setup_commands(repo_root) == ["make demo", "make test"]


def test_ci_calls_make_test(repo_root: Path):
    lines = [line.strip() for line in (repo_root / ".ci" / "run").read_text().splitlines()]
    assert "make test" in lines


def test_readme_links_exist(repo_root: Path):
    text = (repo_root / "README.md").read_text()
    for target in re.findall(r"\]\(((?!https?://)[^)#]+)\)", text):
        assert (repo_root / target).exists(), target


@pytest.mark.integration
def test_make_demo_runs_end_to_end(repo_root: Path, tmp_path: Path):
    """`make demo` with the demo's outputs redirected into a temp dir (the venv already exists)."""
    demo, out, run = tmp_path / "demo", tmp_path / "out", tmp_path / "run"
    res = subprocess.run(
        ["make", "demo", f"DEMO_DIR={demo}", f"DEMO_OUT={out}", f"DEMO_RUN={run}", "DEMO_TRACKS=6"],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert (demo / "ground_truth.csv").is_file()
    assert (out / "windows.parquet").is_file() and (out / "summary.json").is_file()
    assert "caption (template):" in res.stdout
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    assert (run / "demo.wav").is_file()
    assert (run / "eval" / "metrics.json").is_file() and (run / "eval" / "report.html").is_file()
    # Both training and evaluation are in W&B (offline runs, ready for `wandb sync`).
    assert len(list((run / "wandb").glob("offline-run-*/run-*.wandb"))) == 1
    assert len(list((run / "eval" / "wandb").glob("offline-run-*/run-*.wandb"))) == 1
