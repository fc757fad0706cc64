"""The shipped `accelerate launch` configs (configs/accelerate/): accelerate reads each, each file's header gives
the command that uses it, and the FSDP shard units are layer classes of the models they are for."""

from __future__ import annotations

from pathlib import Path

import pytest

FOLDER = Path(__file__).resolve().parents[1] / "configs" / "accelerate"
FILES = sorted(FOLDER.glob("*.yaml"))
EXPECTED = {  # distributed type, processes, machines
    "single-gpu.yaml": ("NO", 1, 1),
    "ddp.yaml": ("MULTI_GPU", 2, 1),
    "multi-node.yaml": ("MULTI_GPU", 16, 2),
    "fsdp-musicgen.yaml": ("FSDP", 2, 1),
    "fsdp-acestep.yaml": ("FSDP", 2, 1),
}


def test_every_launch_setup_has_a_config():
    assert sorted(p.name for p in FILES) == sorted(EXPECTED)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_accelerate_reads_it_and_its_header_runs_it(path):
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(path))
    header = "\n".join(line for line in path.read_text().splitlines() if line.startswith("#"))
    assert f"accelerate launch --config_file configs/accelerate/{path.name}" in header, header
    assert "-m tunekit train" in header, header
    assert (cfg.distributed_type.name, cfg.num_processes, cfg.num_machines) == EXPECTED[path.name]
    if cfg.num_machines > 1:
        assert cfg.main_process_port and cfg.main_process_ip and "--machine_rank" in header


def test_fsdp_shard_units_are_layers_of_their_models():
    """accelerate finds each config's layer class by name in the model, as its auto-wrap policy does."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils.dataclasses import get_module_class_from_name

    from tunekit.models.musicgen import load_musicgen
    from tunekit.models.registry import DEFAULTS
    from tunekit.train.acestep import load_dit

    models = {"fsdp-musicgen.yaml": load_musicgen(DEFAULTS["musicgen"], tiny=True)[0].decoder,
              "fsdp-acestep.yaml": load_dit(DEFAULTS["acestep"], tiny=True, cache_dir=None)}
    for name, model in models.items():
        layer = load_config_from_file(str(FOLDER / name)).fsdp_config["fsdp_transformer_layer_cls_to_wrap"]
        cls = get_module_class_from_name(model, layer)
        assert cls is not None, f"{name}: no {layer} in {type(model).__name__}"
        assert sum(isinstance(m, cls) for m in model.modules()) == model.config.num_hidden_layers, name
