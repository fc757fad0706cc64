"""The model-family seam: every family provides every part, the verbs reach a family only through it."""

from __future__ import annotations

import inspect
import json

import pytest
from omegaconf import OmegaConf

from tunekit.errors import ConfigError
from tunekit.families import FAMILIES, Family, family_of_model, family_of_run, get_family
from tunekit.paths import resource_dir


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_a_family_provides_every_part(name):
    from tunekit.export.config import FORMATS
    from tunekit.models import tiny
    from tunekit.prep.registry import STAGES

    family = FAMILIES[name]
    assert callable(family.part("trainer")) and inspect.isclass(family.part("dataset"))
    sampler = family.part("sampler")
    assert sampler.name == name
    for method in ("load", "generate", "codec_layout"):
        assert callable(getattr(sampler, method, None)), f"{name} sampler lacks {method}"
    assert isinstance(inspect.getattr_static(sampler, "codec"), property)
    stages = list(OmegaConf.load(resource_dir("pipelines") / f"{family.pipeline}.yaml").stages)
    assert stages[-1] == family.prep_tail and family.prep_tail in STAGES, stages
    assert set(family.dataset_exports) <= set(FORMATS)
    variants = [v.id for v in family.variants()]
    assert family.default_checkpoint() in variants, variants
    assert family.tiny_models() and set(family.tiny_models()) <= set(tiny.TINY_NAMES)


def test_every_model_option_names_a_family_and_every_family_has_options():
    from tunekit.families import model_options

    options = model_options()
    assert {v["family"] for v in options.values()} == set(FAMILIES), options
    for name, option in options.items():
        family = FAMILIES[option["family"]]
        assert option.get("name") is None or family_of_model(option["name"]).name == family.name, name
        assert (resource_dir("configs") / "model" / "train" / f"{name}.yaml").is_file(), f"{name}: training defaults"
    assert FAMILIES["musicgen"].options() == ["musicgen"]
    assert FAMILIES["acestep"].options()[0] == "acestep-1.5-turbo"  # the family's default checkpoint first


def test_a_checkpoint_selects_its_option(tmp_path):
    """model=<checkpoint> on the command line picks the option (and so the training defaults) it belongs to:
    by the id an option names, or for an ACE-Step folder by the variant its transformer config states."""
    import json

    from tunekit.cli.main import VERBS, _expand
    from tunekit.families import option_for_checkpoint

    assert option_for_checkpoint("facebook/musicgen-medium") == "musicgen"
    assert option_for_checkpoint("ACE-Step/acestep-v15-xl-base-diffusers") == "acestep-1.5-base"
    folder = tmp_path / "my-sft"
    (folder / "transformer").mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "AceStepPipeline"}))
    (folder / "transformer" / "config.json").write_text(json.dumps({"model_version": "sft", "is_turbo": False}))
    assert option_for_checkpoint(str(folder)) == "acestep-1.5-sft"
    assert _expand(VERBS["train"], [f"model={folder}"]) == ["model=acestep-1.5-sft", f"model.name={folder}"]


def test_family_of_a_checkpoint(tmp_path):
    assert family_of_model("facebook/musicgen-stereo-melody").name == "musicgen"
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "musicgen_melody"}))
    assert family_of_model(str(folder)).name == "musicgen"
    (folder / "config.json").write_text(json.dumps({"model_type": "encodec"}))
    with pytest.raises(ConfigError, match="is a encodec model, not a generator") as err:
        family_of_model(str(folder), key="model.name")
    assert err.value.key == "model.name"
    with pytest.raises(ConfigError, match="unknown model family 'nope'; available: musicgen"):
        get_family("nope")


def test_family_of_a_run_folder(tmp_path):
    (tmp_path / "config.yaml").write_text("model:\n  name: facebook/musicgen-small\n")
    assert family_of_run(tmp_path).name == "musicgen"  # runs written before families existed
    (tmp_path / "config.yaml").write_text("model:\n  family: other\n")
    with pytest.raises(ConfigError, match="unknown model family 'other'") as err:
        family_of_run(tmp_path)
    assert err.value.key == "run"


def test_train_dispatches_to_the_family_trainer(tmp_path, monkeypatch):
    """`tunekit train` calls the chosen family's trainer with the checkpoint resolved, and refuses a checkpoint
    of another family: the seam a second family plugs into."""
    import dataclasses

    from tunekit.config.compose import load_config
    from tunekit.train.config import TrainConfig
    from tunekit.train.run import run_train

    seen = []
    monkeypatch.setitem(globals(), "_recording_trainer", lambda cfg: seen.append(OmegaConf.to_container(cfg)) or 7)
    other = dataclasses.replace(FAMILIES["musicgen"], trainer=f"{__name__}:_recording_trainer")
    monkeypatch.setitem(FAMILIES, "musicgen", other)
    cfg = load_config("train", [f"out={tmp_path}/run", f"data.path={tmp_path}"], TrainConfig)
    assert run_train(cfg) == 7
    assert seen[0]["model"]["name"] == "facebook/musicgen-small"
    fake = Family(name="fake", summary="", loaders=("demucs",), pipeline="musicgen", prep_tail="tokens",
                  dataset="", trainer=f"{__name__}:_recording_trainer", sampler="", run_formats=(),
                  dataset_exports=())
    monkeypatch.setitem(FAMILIES, "fake", fake)
    cfg = load_config("train", [f"out={tmp_path}/run", f"data.path={tmp_path}", "model.name=htdemucs"], TrainConfig)
    with pytest.raises(ConfigError, match="model.name=htdemucs is a fake checkpoint but model=musicgen") as err:
        run_train(cfg)
    assert err.value.key == "model.name" and len(seen) == 1


def test_ls_lists_each_family_with_its_variants():
    from tunekit.cli.listing import list_resources

    text = list_resources("families")
    for family in FAMILIES.values():
        assert f"  {family.name}  {family.summary}" in text
        for variant in family.variants():
            assert variant.id in text
