"""The `tunekit` command line: help, ls, config printing and one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tunekit.cli.main import VERBS, main

TUNEKIT = [sys.executable, "-m", "tunekit"]


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*TUNEKIT, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_help_lists_every_verb_and_ends_with_an_example(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in VERBS:
        assert name in out
    assert "ls" in out and "config" in out
    assert out.strip().splitlines()[-2].strip() == "example:"


def test_help_does_not_import_heavy_libraries():
    code = (
        "import sys; from tunekit.cli.main import main; main(['--help']);"
        "heavy = [m for m in ('torch', 'transformers', 'hydra', 'omegaconf', 'essentia', 'demucs', 'librosa', 'wandb')"
        " if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_every_verb_help_ends_with_worked_example(verb, capsys):
    assert main([*verb.split(), "--help"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-2].strip() == "example:"
    assert out[-1].strip().startswith("tunekit ")
    assert "could not read the config" not in "\n".join(out)


def test_unknown_verb_is_a_one_line_error():
    res = run_cli("trian")
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0
    assert "unknown verb 'trian'" in res.stderr and "available:" in res.stderr
    assert "Traceback" not in res.stderr


def test_unknown_key_names_the_key_and_valid_keys():
    res = run_cli("corpus", "synth", "seeed=3")
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    assert res.stderr.strip().count("\n") == 0
    assert "unknown key 'seeed'" in res.stderr and "seed" in res.stderr


def test_bad_value_type_names_the_key():
    res = run_cli("corpus", "synth", "n_tracks=many")
    assert res.returncode == 2
    assert "n_tracks" in res.stderr and "Traceback" not in res.stderr


def test_cfg_job_prints_config_without_running(tmp_path):
    res = run_cli("corpus", "synth", f"out={tmp_path / 'x'}", "--cfg", "job")
    assert res.returncode == 0, res.stderr
    assert f"out: {tmp_path / 'x'}" in res.stdout
    assert not (tmp_path / "x").exists()


def test_config_verb_prints_merged_config(tmp_path):
    res = run_cli("config", "corpus", "synth", "seed=7")
    assert res.returncode == 0, res.stderr
    assert "seed: 7" in res.stdout


def test_config_prints_required_values_not_given_as_missing():
    """`tunekit config train recipe=lofi` shows the merged recipe before a dataset exists: ??? marks the
    required values, listed on stderr; nothing else is wrong, so it exits 0."""
    res = run_cli("config", "train", "recipe=lofi")
    assert res.returncode == 0, res.stderr
    assert "out: ???" in res.stdout and "  path: ???" in res.stdout and "recipe_name: lofi" in res.stdout
    assert "r: 16" in res.stdout  # the recipe's own values are merged in
    assert res.stderr.strip() == (
        "tunekit: note: required values not set (shown as ???): data.path, out; "
        "`tunekit train` needs them, e.g. data.path=..."
    )
    job = run_cli("train", "recipe=lofi", "--cfg", "job")
    assert job.returncode == 0 and job.stdout == res.stdout, job.stderr


def test_config_and_run_report_every_wrong_value_at_once():
    shown = run_cli("config", "train", "recipe=lofi", "method.r=0", "trainer.lr=-1")
    assert shown.returncode == 2
    assert shown.stderr.strip() == (
        "tunekit: error: 2 config problems: method.r: LoRA rank must be >= 1; trainer.lr: must be > 0 (got -1.0)"
    )
    run = run_cli("train", "recipe=lofi", "method.r=0", "trainer.lr=-1")
    assert run.returncode == 2 and "Traceback" not in run.stderr
    wanted = ("4 config problems", "missing value for 'data.path'", "missing value for 'out'", "method.r", "trainer.lr")
    assert all(part in run.stderr for part in wanted), run.stderr


def test_no_hydra_litter_in_working_directory(tmp_path):
    res = run_cli("corpus", "synth", "--cfg", "job", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert list(tmp_path.iterdir()) == []


def test_ls_lists_sections(capsys):
    assert main(["ls"]) == 0
    out = capsys.readouterr().out
    for section in ("recipes:", "pipelines:", "models:"):
        assert section in out


def test_ls_unknown_section():
    res = run_cli("ls", "nope")
    assert res.returncode == 2 and "available: families, recipes, pipelines, models" in res.stderr


def test_folders_in_working_directory_do_not_shadow_keys(tmp_path):
    """A `data/` or `out/` folder where tunekit runs must not turn into a config group."""
    (tmp_path / "out").mkdir()
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "mine.yaml").write_text("# @package _global_\n# mine\n")
    res = run_cli("corpus", "synth", "out=somewhere", "--cfg", "job", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "out: somewhere" in res.stdout


def test_unknown_recipe_lists_available_recipes(repo_root):
    res = run_cli("train", "recipe=nope")
    assert res.returncode == 2
    shipped = sorted(p.stem for p in (repo_root / "recipes").glob("*.yaml"))
    assert res.stderr.strip() == f"tunekit: error: unknown recipe 'nope'; available: {', '.join(shipped)}"


def test_data_shorthand_sets_the_dataset_path(tmp_path):
    res = run_cli("config", "train", "recipe=lofi", f"data={tmp_path}", f"out={tmp_path / 'run'}")
    assert res.returncode == 0, res.stderr
    assert f"path: {tmp_path}" in res.stdout


def test_user_recipes_from_working_directory_and_path(tmp_path):
    """./recipes/NAME.yaml in the working directory, or a path, without touching the package."""
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "mine.yaml").write_text("# @package _global_\n# my recipe\ntrainer:\n  max_steps: 7\n")
    res = run_cli("config", "train", "recipe=mine", "data=d", "out=o", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "max_steps: 7" in res.stdout
    ls = run_cli("ls", "recipes", cwd=tmp_path)
    assert "mine" in ls.stdout and "my recipe" in ls.stdout
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "other.yaml").write_text("# @package _global_\n# other\ntrainer:\n  max_steps: 9\n")
    res = run_cli("config", "train", f"recipe={elsewhere / 'other.yaml'}", "data=d", "out=o")
    assert res.returncode == 0, res.stderr
    assert "max_steps: 9" in res.stdout


def test_help_lists_every_key_with_required_ones_as_missing():
    train = run_cli("train", "--help")
    assert train.returncode == 0, train.stderr
    lines = train.stdout.splitlines()
    assert any(line.startswith("  out=???") for line in lines), train.stdout
    assert any(line.startswith("  data.path=???") for line in lines), train.stdout
    assert any(line.startswith("  trainer.lr=") and "#" in line for line in lines), train.stdout  # nested, documented
    assert "{...}" not in train.stdout and "=None" not in train.stdout
    prep = run_cli("prep", "--help").stdout
    assert "  stages=[ingest,license," in prep and "  quality.min_seconds=10.0" in prep


def test_a_misspelt_section_names_the_valid_ones():
    res = run_cli("prep", "qualty.min_seconds=3", "--cfg", "job")
    assert res.returncode == 2
    assert "'qualty' is not a config section; did you mean 'quality'? sections: caption, decode," in res.stderr


def test_a_bare_word_gets_a_hint():
    res = run_cli("prep", "mycorpus", "--cfg", "job")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "cannot parse 'mycorpus': arguments are key=value" in res.stderr and "tunekit prep --help" in res.stderr


def test_a_list_key_takes_a_bare_value_as_a_one_item_list():
    one = run_cli("config", "eval", "run=runs/x", "reference_splits=valid")
    assert one.returncode == 0 and "reference_splits:\n- valid\nembeddings" in one.stdout, one.stderr
    two = run_cli("config", "eval", "run=runs/x", "reference_splits=valid,test")
    assert two.returncode == 0 and "reference_splits:\n- valid\n- test\n" in two.stdout, two.stderr


def test_train_into_an_existing_file_is_one_line(tmp_path):
    target = tmp_path / "taken"
    target.write_text("not a folder")
    res = run_cli("train", "recipe=demo", f"data.path={tmp_path}", f"out={target}", "logger=none")
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert f"out: {target} is a file; give a folder for the run" in res.stderr
