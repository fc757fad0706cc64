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


def test_make_demo_takes_the_acestep_path_when_asked(repo_root: Path):
    """`make demo DEMO_FAMILY=acestep` runs the same verbs with ACE-Step's pipeline and recipe (a dry run: the
    ACE-Step path itself runs end to end in test_acestep_e2e); another family name stops make with the choices."""
    def dry(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["make", "-n", "demo", *args], cwd=repo_root, capture_output=True, text=True, timeout=60)

    lines = [line for line in dry("DEMO_FAMILY=acestep").stdout.splitlines() if "tunekit" in line]
    assert any(" prep pipeline=acestep " in line and "out=out/demo-acestep" in line for line in lines), lines
    assert any("train recipe=demo-acestep data=out/demo-acestep out=runs/demo-acestep" in line for line in lines)
    assert any("generate run=runs/demo-acestep" in line for line in lines), lines
    plain = [line for line in dry().stdout.splitlines() if "tunekit" in line]
    assert any("train recipe=demo data=out/demo out=runs/demo" in line for line in plain), plain
    wrong = dry("DEMO_FAMILY=jukebox")
    assert wrong.returncode != 0 and "use musicgen or acestep" in wrong.stderr, wrong.stderr
