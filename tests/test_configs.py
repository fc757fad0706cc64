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
from tunekit.errors import ConfigError
from tunekit.paths import resource_dir


def _schema(verb):
    module, _, attr = verb.schema.partition(":")
    return getattr(importlib.import_module(module), attr)


def _combinations(config: str) -> list[list[str]]:
    """Override lists selecting every option of every group reachable from `config`."""
    todo: list[list[str]] = [[]]
    seen: set[tuple[str, ...]] = set()
    out: list[list[str]] = []
    while todo:
        overrides = todo.pop()
        key = tuple(sorted(overrides))
        if key in seen:
            continue
        seen.add(key)
        out.append(overrides)
        chosen = {o.split("=")[0] for o in overrides}
        for group in group_choices(config, overrides):
            if group in chosen:
                continue
            for option in group_options(group):
                todo.append([*overrides, f"{group}={option}"])
    return out


def _required(verb) -> list[str]:
    """Values a verb cannot compose without (e.g. the dataset path), filled with placeholders."""
    from omegaconf import OmegaConf

    from tunekit.config.compose import compose_raw

    cfg = OmegaConf.merge(OmegaConf.structured(_schema(verb)), compose_raw(verb.config))
    return [f"{k}=placeholder" for k in OmegaConf.missing_keys(cfg)]


@pytest.mark.parametrize("name", sorted(VERBS))
def test_every_group_option_composes_and_validates(name):
    verb = VERBS[name]
    schema = _schema(verb)
    required = _required(verb)
    combos = _combinations(verb.config)
    assert combos, name
    for overrides in combos:
        try:
            load_config(verb.config, [*required, *overrides], schema)
        except ConfigError as exc:
            # Validation of placeholder values is fine; structural errors are not.
            assert "unknown" not in str(exc) and "invalid value" not in str(exc), (overrides, exc)


def test_every_primary_config_belongs_to_a_verb():
    primaries = {p.stem for p in resource_dir("configs").glob("*.yaml")}
    assert primaries <= {v.config for v in VERBS.values()}, primaries


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
    pairs = [(v, g) for v in VERBS.values() for g in group_choices(v.config, _required(v))]
    assert pairs, "no verb uses a config group"
    verb, group = pairs[0]
    with pytest.raises(ConfigError) as err:
        load_config(verb.config, [*_required(verb), f"{group}=nope"], _schema(verb))
    from tunekit.config.compose import GROUP_ALIASES

    noun = {v: k for k, v in GROUP_ALIASES.items()}.get(group, group)
    choices = ", ".join(group_options(group))
    assert str(err.value) == f"unknown {noun} 'nope'; available: {choices}"
