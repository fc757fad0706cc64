"""Every shipped config, config-group option, pipeline and recipe composes and validates.

Walks each verb's config groups recursively (choosing an option can bring in further groups),
so a new file in any group is covered without editing this test.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from tunekit.cli.main import VERBS
from tunekit.config.compose import group_choices, group_options, load_config
from tunekit.errors import ConfigError, ConfigErrors
from tunekit.paths import resource_dir


def _schema(verb):
    module, _, attr = verb.schema.partition(":")
    return getattr(importlib.import_module(module), attr)


def _combinations(config: str, schema: type) -> list[list[str]]:
    """Override lists choosing an option in every group reachable from `config` (choosing an option can bring in
    further groups, which are then combined too), plus the defaults. Every option of every group appears, and every
    pair of options of two groups appears together at least once (all-pairs): the full product of recipes, model
    options, methods, loggers and model sets would take minutes, and a problem between two choices shows in a pair."""
    import itertools

    out: list[list[str]] = [[]]
    todo: list[list[str]] = [[]]
    while todo:
        overrides = todo.pop()
        chosen = {o.split("=")[0] for o in overrides}
        groups = [g for g in group_choices(config, schema, overrides) if g not in chosen]
        if not groups:
            continue
        covered: set[tuple[str, ...]] = set()
        for options in itertools.product(*[[f"{g}={o}" for o in group_options(g)] for g in groups]):
            pairs = {(a, b) for a, b in itertools.combinations(options, 2)} | {(o,) for o in options}
            if pairs <= covered:
                continue
            covered |= pairs
            todo.append([*overrides, *options])
            out.append([*overrides, *options])
    return out


def _required(verb) -> list[str]:
    """Values a verb cannot compose without (e.g. the dataset path), filled with placeholders.
    Only for tests of composition errors; `valid_inputs` gives values that pass validation."""
    from omegaconf import OmegaConf

    from tunekit.config.compose import compose_raw

    cfg = compose_raw(verb.config, _schema(verb))
    return [f"{k}=placeholder" for k in OmegaConf.missing_keys(cfg)]


# What a user must give besides the schema's required (???) keys before a verb's checks pass,
# as in each verb's worked example. Paths are made under the test's temporary folder.
USER_INPUTS: dict[str, list[str]] = {
    "generate": ["prompt=a mellow lo-fi beat with warm piano"],
    "eval": ["generated={tmp}/generated", "reference={tmp}/reference", "out={tmp}/eval"],
    "corpus fma": ["tracks={tmp}/tracks.csv"],  # a file: names with a suffix are made as empty files
    "corpus jamendo": ["tsv={tmp}/autotagging.tsv"],
}


def valid_inputs(verb, tmp: Path) -> list[str]:
    """Overrides that make `verb`'s own config valid: each required (???) key set to an existing
    folder under `tmp` (every required value is a path today), plus USER_INPUTS."""
    from omegaconf import OmegaConf

    from tunekit.config.compose import compose_raw

    cfg = compose_raw(verb.config, _schema(verb))
    given = {item.partition("=")[0]: item.partition("=")[2] for item in USER_INPUTS.get(verb.name, [])}
    for key in sorted(OmegaConf.missing_keys(cfg)):
        given.setdefault(key, f"{{tmp}}/{key.replace('.', '_')}")
    out = []
    for key, value in given.items():
        if "{tmp}" in value:
            path = Path(value.format(tmp=tmp))
            if path.suffix:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
            else:
                path.mkdir(parents=True, exist_ok=True)
            value = str(path)
        out.append(f"{key}={value}")
    return out


def config_problems(verb, overrides: list[str]) -> list[str]:
    """Every problem the full validation (composition, required values, the schema's checks) reports
    for `verb` with `overrides`; empty when the config is valid."""
    try:
        load_config(verb.config, overrides, _schema(verb))
    except ConfigErrors as exc:
        return exc.problems
    except ConfigError as exc:
        return [str(exc)]
    return []


@pytest.mark.parametrize("name", sorted(VERBS))
def test_every_group_option_composes_and_validates(name, tmp_path):
    """Every shipped config, group option, recipe and pipeline, alone and combined, passes the full
    validation a run does: any problem at all is a failure."""
    verb = VERBS[name]
    inputs = valid_inputs(verb, tmp_path)
    combos = _combinations(verb.config, _schema(verb))
    assert combos, name
    failing = {" ".join(o) or "(defaults)": p for o in combos if (p := config_problems(verb, [*inputs, *o]))}
    assert not failing, failing


def test_the_check_reports_every_wrong_value_of_a_user_recipe(tmp_path, monkeypatch):
    """The check above fails on a wrong value: a recipe in $TUNEKIT_RECIPES_PATH with two is
    visited by the walk, and both are reported at once."""
    recipes = tmp_path / "my_recipes"
    recipes.mkdir()
    (recipes / "broken.yaml").write_text(
        "# @package _global_\n# a recipe with two wrong values\nmethod:\n  r: 0\ntrainer:\n  lr: -1\n"
    )
    monkeypatch.setenv("TUNEKIT_RECIPES_PATH", str(recipes))
    verb = VERBS["train"]
    assert "broken" in group_options("recipes")  # so the walk visits recipes=broken
    inputs = valid_inputs(verb, tmp_path)
    assert config_problems(verb, [*inputs, "recipes=lofi"]) == []
    problems = config_problems(verb, [*inputs, "recipes=broken"])
    assert len(problems) == 2, problems
    assert problems[0].startswith("method.r:") and problems[1].startswith("trainer.lr:"), problems
    # Without the required values, those are reported in the same error as the wrong ones.
    everything = config_problems(verb, ["recipes=broken"])
    missing = [p.split(" (")[0] for p in everything if p.startswith("missing value")]
    assert missing == ["missing value for 'data.path'", "missing value for 'out'"], everything
    assert [p for p in everything if not p.startswith("missing value")] == problems, everything


def test_every_primary_config_belongs_to_a_verb():
    primaries = {p.stem for p in resource_dir("configs").glob("*.yaml")}
    assert primaries <= {v.config for v in VERBS.values()}, primaries


@pytest.mark.parametrize("name", sorted(VERBS))
def test_primary_configs_hold_no_defaults_of_their_own(name):
    """One source of truth per default: the schema (stored in Hydra's ConfigStore and first in the defaults
    list) holds every default; configs/<verb>.yaml only chooses groups. A value written there as well would be
    a second copy that drifts."""
    from omegaconf import OmegaConf

    from tunekit.config.compose import schema_name

    verb = VERBS[name]
    raw = OmegaConf.to_container(OmegaConf.load(resource_dir("configs") / f"{verb.config}.yaml"))
    values = sorted(k for k in raw if k != "defaults")
    assert not values, f"configs/{verb.config}.yaml sets {values}: give them a default in {verb.schema} instead"
    assert raw["defaults"][:2] == [schema_name(verb.config), "_self_"], raw["defaults"]


def test_the_schema_is_what_a_key_falls_back_to(tmp_path):
    """A default changed in the schema is what a run gets: nothing in the YAML shadows it."""
    from tunekit.train.config import TrainConfig, TrainerConfig

    overrides = [f"out={tmp_path}/run", f"data.path={tmp_path}"]
    assert load_config("train", overrides, _schema_with_another_default()).trainer.grad_clip == 0.25
    assert load_config("train", overrides, TrainConfig).trainer.grad_clip == TrainerConfig().grad_clip != 0.25


def _schema_with_another_default():
    """TrainConfig with trainer.grad_clip defaulting to 0.25 (module-level classes: the hints must resolve)."""
    import dataclasses

    from tunekit.train.config import TrainConfig, TrainerConfig

    trainer = dataclasses.make_dataclass("TrainerClip", [("grad_clip", float, 0.25)], bases=(TrainerConfig,))
    return dataclasses.make_dataclass(
        "TrainClip", [("trainer", trainer, dataclasses.field(default_factory=trainer))], bases=(TrainConfig,)
    )


def _yaml_files(kind: str) -> list[Path]:
    return sorted(resource_dir(kind).glob("*.yaml"))


@pytest.mark.parametrize("kind", ["recipes", "pipelines"])
def test_overlays_start_with_global_package_and_a_description(kind):
    from tunekit.cli.listing import describe_yaml

    for path in _yaml_files(kind):
        text = path.read_text()
        assert text.splitlines()[0].strip() == "# @package _global_", path
        assert describe_yaml(path), f"{path} needs a one-line description comment"


def test_unknown_group_option_lists_choices():
    pairs = [(v, g) for v in VERBS.values() for g in group_choices(v.config, _schema(v), _required(v))]
    assert pairs, "no verb uses a config group"
    verb, group = pairs[0]
    with pytest.raises(ConfigError) as err:
        load_config(verb.config, [*_required(verb), f"{group}=nope"], _schema(verb))
    from tunekit.config.compose import GROUP_ALIASES

    noun = {v: k for k, v in GROUP_ALIASES.items()}.get(group, group)
    choices = ", ".join(group_options(group))
    assert str(err.value) == f"unknown {noun} 'nope'; available: {choices}"
