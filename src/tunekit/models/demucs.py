"""Demucs source separation: loader and tiny stand-ins.

Real default: `htdemucs` (see `registry.MODELS` for htdemucs_ft, htdemucs_6s, hdemucs_mmi,
mdx_extra). demucs 4.1 publishes each named model as a Hugging Face repository
(`adefossez/HTDemucs`, `adefossez/HTDemucs-ft`, `adefossez/Demucs-mdx_extra`, …) holding the bag
file `<name>.yaml` (signatures, per-stem weights, segment) and one `<signature>.safetensors` per
model, whose metadata carries the class and its init arguments. Every model here, real or tiny, is
loaded from such a folder with demucs's own `demucs.hf.load_safetensors_model` and
`demucs.apply.BagOfModels`, exactly as `demucs.pretrained.get_model` does for the Hub.

Security: demucs's legacy loaders (`get_model(name, repo=folder)` for `.th` files, and the old
download site) unpickle with `torch.load(weights_only=False)`, which runs arbitrary code from the
file. tunekit never calls them: safetensors files are plain tensors, and a user's legacy `.th`
file is read with `torch.load(weights_only=True)`, allowing only the demucs model classes and
`fractions.Fraction` as globals, then handed to `demucs.states.load_model`.
"""

from __future__ import annotations

import hashlib
import json
from fractions import Fraction
from pathlib import Path
from typing import Any

from tunekit.errors import ConfigError
from tunekit.models.hub import loading
from tunekit.models.registry import DEFAULTS, resolve

DEMUCS_DEFAULT = DEFAULTS["demucs"]
SOURCES_4 = ["drums", "bass", "other", "vocals"]
SOURCES_6 = ["drums", "bass", "other", "vocals", "guitar", "piano"]
TINY_DEMUCS_SEED = 1020

# The shape of each named bag (demucs/remote/<name>.yaml): model class, sources, number of models,
# per-model stem weights, bag segment (seconds).
_IDENTITY_4 = [[1.0 if i == j else 0.0 for j in range(4)] for i in range(4)]
_TINY_BAGS: dict[str, dict[str, Any]] = {
    "htdemucs": {"klass": "HTDemucs", "sources": SOURCES_4, "models": 1, "weights": None, "segment": None},
    "htdemucs_ft": {"klass": "HTDemucs", "sources": SOURCES_4, "models": 4, "weights": _IDENTITY_4, "segment": None},
    "htdemucs_6s": {"klass": "HTDemucs", "sources": SOURCES_6, "models": 1, "weights": None, "segment": None},
    "hdemucs_mmi": {"klass": "HDemucs", "sources": SOURCES_4, "models": 1, "weights": None, "segment": 44},
    "mdx_extra": {"klass": "HDemucs", "sources": SOURCES_4, "models": 4, "weights": None, "segment": 44},
}


def load_demucs(
    name: str = DEMUCS_DEFAULT,
    *,
    repo: str | Path | None = None,
    tiny: bool = False,
    cache_dir: str | Path | None = None,
) -> Any:
    """Load a Demucs model or bag of models (eval mode) for `demucs.apply.apply_model`.

    `name` is a bag name (`htdemucs`) or a single model's signature; `repo` a local folder holding
    `<name>.yaml` and the model files (safetensors, or legacy `.th`). Without `repo` the named model
    comes from the Hugging Face Hub (or its local cache); with `tiny=True` from its tiny stand-in.
    """
    folder = demucs_folder(name, repo=repo, tiny=tiny, cache_dir=cache_dir)
    model = load_from_folder(name, folder)
    model.eval()
    return model


def demucs_folder(
    name: str = DEMUCS_DEFAULT,
    *,
    repo: str | Path | None = None,
    tiny: bool = False,
    cache_dir: str | Path | None = None,
) -> Path:
    """The local folder holding `name`'s files: `repo`, the tiny stand-in, or the Hub snapshot."""
    if repo is not None:
        folder = Path(repo).expanduser()
        if not folder.is_dir():
            raise ConfigError(f"Demucs repo folder {str(repo)!r} does not exist; point it at a folder "
                              f"holding {name}.yaml and the model files, or leave it unset for the Hub")
        return folder
    if tiny:
        return Path(resolve(name, tiny=True, cache_dir=cache_dir))
    return _hub_folder(name, local_files_only=False)


def demucs_files(name: str, repo: str | Path | None = None, *, local_files_only: bool = True) -> list[Path]:
    """The files `name` loads from (bag yaml and model files); from the local cache unless told otherwise."""
    folder = Path(repo) if repo is not None else _hub_folder(name, local_files_only=local_files_only)
    bag = folder / f"{name.rpartition('/')[2]}.yaml"
    if not bag.is_file():
        return [_model_file(folder, name)]
    return [bag, *(_model_file(folder, sig) for sig in _read_bag(bag)["models"])]


def hub_repo_id(name: str) -> str:
    """The Hub repository demucs publishes `name` in (`htdemucs` -> `adefossez/HTDemucs`)."""
    from demucs.hf import DEFAULT_NAMESPACE, hf_repo_name

    namespace, _, short = name.rpartition("/")
    return f"{namespace or DEFAULT_NAMESPACE}/{hf_repo_name(short)}"


def _hub_folder(name: str, *, local_files_only: bool) -> Path:
    from huggingface_hub import hf_hub_download

    repo_id = hub_repo_id(name)
    short = name.rpartition("/")[2]
    with loading(name, hub_repo=repo_id):
        bag_file = Path(hf_hub_download(repo_id, f"{short}.yaml", local_files_only=local_files_only))
        for sig in _read_bag(bag_file)["models"]:
            hf_hub_download(repo_id, f"{sig}.safetensors", local_files_only=local_files_only)
    return bag_file.parent


def load_from_folder(name: str, folder: Path) -> Any:
    """Build the bag `<name>.yaml` (or the single model `name`) from the files in `folder`."""
    from demucs.apply import BagOfModels

    bag_file = folder / f"{name.rpartition('/')[2]}.yaml"
    if not bag_file.is_file():
        return _load_model_file(_model_file(folder, name))
    bag = _read_bag(bag_file)
    models = [_load_model_file(_model_file(folder, sig)) for sig in bag["models"]]
    return BagOfModels(models, bag.get("weights"), bag.get("segment"))


def _read_bag(path: Path) -> dict[str, Any]:
    import yaml

    bag = yaml.safe_load(path.read_text())
    if not isinstance(bag, dict) or not isinstance(bag.get("models"), list) or not bag["models"]:
        raise ConfigError(f"Demucs bag file {str(path)!r} must list model signatures under `models:`")
    return bag


def _model_file(folder: Path, sig: str) -> Path:
    candidates = [folder / f"{sig}.safetensors", folder / f"{sig}.th", *sorted(folder.glob(f"{sig}-*.th"))]
    for path in candidates:
        if path.is_file():
            return path
    available = sorted({p.stem.split("-")[0] for p in folder.glob("*.safetensors")} |
                       {p.stem.split("-")[0] for p in folder.glob("*.th")} | {p.stem for p in folder.glob("*.yaml")})
    raise ConfigError(f"Demucs model {sig!r} is not in {str(folder)!r} (neither a bag <name>.yaml nor "
                      f"<signature>.safetensors/.th); available: {', '.join(available) or 'none'}")


def _load_model_file(path: Path) -> Any:
    from demucs.hf import load_safetensors_model

    if path.suffix == ".safetensors":
        return load_safetensors_model(path)
    return _load_th(path)


def _load_th(path: Path) -> Any:
    """A legacy demucs `.th` package, unpickled with weights_only=True (demucs classes allowed)."""
    import pickle

    import torch
    from demucs.demucs import Demucs
    from demucs.hdemucs import HDemucs
    from demucs.htdemucs import HTDemucs
    from demucs.repo import check_checksum
    from demucs.states import load_model

    if "-" in path.stem:  # `<sig>-<sha256 prefix>.th`: demucs's own integrity check
        check_checksum(path, path.stem.rsplit("-", 1)[1])
    try:
        with torch.serialization.safe_globals([HTDemucs, HDemucs, Demucs, Fraction]):
            package = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ConfigError(f"refusing to load {str(path)!r}: it is not a plain demucs model package and "
                          f"unpickling it could run code ({str(exc).splitlines()[0]}); convert it to "
                          "safetensors or use a model from the Hub") from exc
    return load_model(package)


def _encode_json(value: Any) -> Any:
    """JSON for demucs init arguments, with fractions as demucs.hf decodes them."""
    if isinstance(value, Fraction):
        return {"_type": "fraction", "numerator": value.numerator, "denominator": value.denominator}
    if isinstance(value, dict):
        return {k: _encode_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encode_json(v) for v in value]
    return value


def save_safetensors_model(model: Any, folder: Path) -> str:
    """Write `model` as `<signature>.safetensors` in demucs's Hub format; return the signature.

    The signature is the first 8 hex digits of the file's sha256, like demucs's checksummed names.
    """
    from safetensors.torch import save

    args, kwargs = model._init_args_kwargs
    klass = type(model)
    metadata = {
        "klass": f"{klass.__module__}.{klass.__name__}",
        "args": json.dumps(_encode_json(list(args))),
        "kwargs": json.dumps(_encode_json(kwargs), sort_keys=True),
    }
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    data = _canonical_header(save(state, metadata=metadata))
    sig = hashlib.sha256(data).hexdigest()[:8]
    (folder / f"{sig}.safetensors").write_bytes(data)
    return sig


def _canonical_header(data: bytes) -> bytes:
    """The same safetensors file with its JSON header keys sorted: safetensors writes metadata in
    hash-map order, which differs between runs and would change the bytes (and the signature)."""
    size = int.from_bytes(data[:8], "little")
    header = json.dumps(json.loads(data[8 : 8 + size]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # the format pads the header with spaces to 8-byte alignment
    return len(header).to_bytes(8, "little") + header + data[8 + size :]


def _tiny_model(klass: str, sources: list[str]) -> Any:
    """One tiny demucs model: default depth (a shallower one allocates ~100 GB), 4 base channels."""
    if klass == "HTDemucs":
        from demucs.htdemucs import HTDemucs

        return HTDemucs(sources=sources, audio_channels=2, samplerate=44_100, segment=Fraction(39, 5),
                        channels=4, t_layers=1, t_heads=2, t_hidden_scale=1.0, dconv_comp=2)
    from demucs.hdemucs import HDemucs

    return HDemucs(sources=sources, audio_channels=2, samplerate=44_100, segment=44, channels=4, dconv_comp=2)


def build_tiny_demucs(out: Path, *, name: str) -> None:
    """Write the tiny stand-in for bag `name`: `<name>.yaml` plus one `<sig>.safetensors` per model,
    of the real bag's class, sources, model count, stem weights and segment."""
    import yaml

    from tunekit.models.tiny import seeded

    shape = _TINY_BAGS[name]
    signatures = []
    for index in range(shape["models"]):
        with seeded(TINY_DEMUCS_SEED + index):
            model = _tiny_model(shape["klass"], shape["sources"])
        signatures.append(save_safetensors_model(model, out))
    bag: dict[str, Any] = {"models": signatures}
    if shape["weights"] is not None:
        bag["weights"] = shape["weights"]
    if shape["segment"] is not None:
        bag["segment"] = shape["segment"]
    (out / f"{name}.yaml").write_text(yaml.safe_dump(bag, default_flow_style=None, sort_keys=False))
