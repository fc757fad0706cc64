"""The train/generate configs: every recipe, method and logger composes into a valid TrainConfig, recipes say
how to run them, and invalid values are reported together, each naming its key."""

from __future__ import annotations

import pytest

from tunekit.config.compose import group_options, load_config
from tunekit.errors import ConfigErrors
from tunekit.families import get_family
from tunekit.generate import GenerateConfig
from tunekit.paths import resource_dir
from tunekit.train.config import TrainConfig
from tunekit.train.methods import Lora, build_method

REQUIRED = ["data.path=/data/prep", "out=/runs/x"]


@pytest.mark.parametrize("recipe", sorted(p.stem for p in resource_dir("recipes").glob("*.yaml")))
def test_every_recipe_composes_validates_and_documents_itself(recipe):
    cfg = load_config("train", [f"recipe={recipe}", *REQUIRED], TrainConfig)
    assert cfg.recipe_name == recipe
    assert cfg.data.pipeline == get_family(cfg.model.family).pipeline  # its family's prep pipeline
    text = (resource_dir("recipes") / f"{recipe}.yaml").read_text()
    assert f"tunekit train recipe={recipe}" in text and "Hardware:" in text and "Why these settings" in text


def test_demo_recipe_is_tiny_on_the_cpu():
    cfg = load_config("train", ["recipe=demo", *REQUIRED], TrainConfig)
    assert cfg.models.tiny is True and cfg.trainer.device == "cpu" and cfg.trainer.max_steps <= 100
    assert cfg.logger._target_.endswith("WandbLogger")  # offline without an API key: no account needed


@pytest.mark.parametrize("method,lr", [("lora", 2e-4), ("full", 1e-5)])
def test_method_groups_set_their_learning_rate(method, lr):
    cfg = load_config("train", [f"method={method}", *REQUIRED], TrainConfig)
    assert build_method(cfg.method).name == method and cfg.trainer.lr == lr
    # a recipe or the command line still wins over the method's default
    assert load_config("train", [f"method={method}", "trainer.lr=3e-4", *REQUIRED], TrainConfig).trainer.lr == 3e-4


def test_every_logger_and_models_option_composes():
    for logger in group_options("logger"):
        for models in group_options("models"):
            cfg = load_config("train", [f"logger={logger}", f"models={models}", *REQUIRED], TrainConfig)
            assert cfg.logger._target_.startswith("tunekit.loggers.")


def test_defaults_are_the_documented_small_data_defaults():
    cfg = load_config("train", REQUIRED, TrainConfig)
    t = cfg.trainer
    # model.name=null is filled with the family's default checkpoint when the config is loaded.
    assert (cfg.model.family, cfg.model.name) == ("musicgen", "facebook/musicgen-small")
    assert build_method(cfg.method) == Lora(r=16, alpha=16.0, dropout=0.05, targets="attention_ffn")
    assert load_config("train", [*REQUIRED, "model.name=facebook/musicgen-medium"], TrainConfig).model.name == \
        "facebook/musicgen-medium"
    assert (list(t.betas), t.weight_decay, t.grad_clip) == ([0.9, 0.95], 0.1, 1.0)
    assert (t.cond_dropout, t.schedule) == (0.3, "cosine")
    assert cfg.logger._target_.endswith("WandbLogger")


def test_all_invalid_values_are_reported_at_once():
    with pytest.raises(ConfigErrors) as err:
        load_config("train", [*REQUIRED, "trainer.batch_size=0", "trainer.lr=-1", "method.targets=everything",
                              "trainer.precision=fp8", "data.crop_seconds=0"], TrainConfig)
    problems = err.value.problems
    for key in ["trainer.batch_size", "trainer.lr", "method.targets", "trainer.precision", "data.crop_seconds"]:
        assert any(p.startswith(key) for p in problems), (key, problems)


def test_missing_data_path_is_named():
    with pytest.raises(ConfigErrors, match="data.path"):
        load_config("train", ["out=/runs/x"], TrainConfig)


def test_generate_config_composes():
    cfg = load_config("generate", ["prompt=a calm piano", "models=tiny"], GenerateConfig)
    assert (cfg.guidance_scale, cfg.top_k, cfg.temperature, cfg.window_seconds) == (None, 250, 1.0, 30.0)
    cfg = load_config("generate", ["prompt=[a, b]"], GenerateConfig)
    assert list(cfg.prompt) == ["a", "b"]


def test_sampling_settings_have_one_name_in_every_verb():
    """generate, train's samples and eval call classifier-free guidance the same: guidance_scale."""
    import dataclasses

    from tunekit.eval.config import EvalConfig
    from tunekit.generate import GenerateConfig
    from tunekit.train.config import TrainConfig

    for schema in (GenerateConfig, EvalConfig, TrainConfig().eval.__class__):
        names = {f.name for f in dataclasses.fields(schema)}
        assert "guidance_scale" in names and "guidance" not in names, (schema.__name__, sorted(names))


def test_the_method_is_the_class_its_group_names():
    """method=lora|full instantiate their `_target_` classes with the section's fields; a class that cannot be
    imported, or is no method, is reported with the key."""
    from tunekit.train.methods import FullFineTune

    full = build_method(load_config("train", [*REQUIRED, "method=full"], TrainConfig).method)
    assert isinstance(full, FullFineTune) and full.full and full.name == "full"
    lora = build_method(load_config("train", [*REQUIRED, "method.r=4", "method.targets=all"], TrainConfig).method)
    assert lora == Lora(r=4, alpha=16.0, dropout=0.05, targets="all") and not lora.full
    for target in ("tunekit.train.nope.Lora", "tunekit.train.methods.build_method"):
        with pytest.raises(ConfigErrors) as err:
            load_config("train", [*REQUIRED, f"method._target_={target}"], TrainConfig)
        assert [p for p in err.value.problems if p.startswith("method._target_")], err.value.problems
