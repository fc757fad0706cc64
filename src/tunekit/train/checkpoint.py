"""Checkpoints that survive `kill -9`: weights in safetensors, training state in JSON and tensor-only files.

A checkpoint is written into `checkpoints/.tmp-step-XXXXXXX/` and renamed to `checkpoints/step-XXXXXXX/`
only when complete, so a kill at any moment leaves the previous checkpoint usable. Contents:

- `weights*.safetensors`: the trained weights only (LoRA adapter tensors, or the decoder for a full
  fine-tune, sharded so saving never holds more than one shard extra in host memory)
- `ema.safetensors`: EMA weights, when EMA is on
- `optimizer.pt`: the optimiser state dict (tensors and numbers only; loaded with weights_only=True)
- `rng-rank<r>.safetensors` + `rng-rank<r>.json`: torch (CPU, CUDA), python and numpy RNG states per rank
- `state.json`: step, data position, counters, scheduler and loss-scaler state
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tunekit.atomic import write_json

CHECKPOINTS = "checkpoints"
_PREFIX = "step-"
_TMP = ".tmp-"
_DONE = "state.json"


def step_name(step: int) -> str:
    """Folder name of the checkpoint at `step`."""
    return f"{_PREFIX}{step:07d}"


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (step, folder), oldest first."""
    root = Path(run_dir) / CHECKPOINTS
    out = []
    if root.is_dir():
        for d in root.iterdir():
            if d.is_dir() and d.name.startswith(_PREFIX) and (d / _DONE).is_file():
                try:
                    out.append((int(d.name[len(_PREFIX) :]), d))
                except ValueError:
                    continue
    return sorted(out)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint, or None."""
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def remove_partial(run_dir: str | Path) -> None:
    """Delete checkpoint folders a killed run left half-written."""
    root = Path(run_dir) / CHECKPOINTS
    if root.is_dir():
        for d in root.iterdir():
            if d.name.startswith(_TMP):
                shutil.rmtree(d, ignore_errors=True)


def begin(run_dir: str | Path, step: int) -> Path:
    """A fresh temporary folder for the checkpoint of `step` (rank 0 calls this before the others write)."""
    tmp = Path(run_dir) / CHECKPOINTS / f"{_TMP}{step_name(step)}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def _fsync_dir(path: Path) -> None:
    for f in path.iterdir():
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def finish(tmp: Path, state: dict[str, Any], keep_last: int) -> Path:
    """Write state.json last, rename the folder into place and delete all but the newest `keep_last`."""
    write_json(tmp / _DONE, state)
    _fsync_dir(tmp)
    final = tmp.parent / tmp.name[len(_TMP) :]
    if final.exists():
        old = final.with_name(f"{_TMP}old-{final.name}")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    for _, d in list_checkpoints(tmp.parent.parent)[:-keep_last]:
        shutil.rmtree(d, ignore_errors=True)
    return final


def save_tensors(
    tensors: dict[str, torch.Tensor], folder: Path, name: str = "weights", max_shard_bytes: int = 1 << 30
) -> None:
    """Save tensors to `<name>.safetensors`, or shards `<name>-0000i.safetensors` + index past `max_shard_bytes`.

    Each shard is copied to host memory only while it is written.
    """
    from safetensors.torch import save_file

    shards: list[list[str]] = [[]]
    size = 0
    for key, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(key)
        size += nbytes
    if len(shards) == 1:
        cpu = {k: tensors[k].detach().to("cpu").contiguous() for k in shards[0]}
        save_file(cpu, str(folder / f"{name}.safetensors"))
        return
    index = {}
    for i, keys in enumerate(shards):
        file = f"{name}-{i + 1:05d}.safetensors"
        save_file({k: tensors[k].detach().to("cpu").contiguous() for k in keys}, str(folder / file))
        index.update({k: file for k in keys})
    write_json(folder / f"{name}.index.json", index)


def load_tensors(folder: Path, name: str = "weights") -> dict[str, torch.Tensor]:
    """Load what `save_tensors` wrote (single file or shards) onto the CPU."""
    from safetensors.torch import load_file

    single = folder / f"{name}.safetensors"
    if single.is_file():
        return load_file(str(single))
    index_file = folder / f"{name}.index.json"
    if not index_file.is_file():
        return {}
    out: dict[str, torch.Tensor] = {}
    for file in sorted(set(json.loads(index_file.read_text()).values())):
        out.update(load_file(str(folder / file)))
    return out


def save_rng(folder: Path, rank: int) -> None:
    """Save this process's python, numpy and torch (CPU + CUDA) RNG states."""
    from safetensors.torch import save_file

    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda_{i}"] = s
    save_file(tensors, str(folder / f"rng-rank{rank}.safetensors"))
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    write_json(
        folder / f"rng-rank{rank}.json",
        {
            "python": [version, list(internal), gauss],
            "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        },
    )


def load_rng(folder: Path, rank: int) -> bool:
    """Restore the RNG states saved by `save_rng` for `rank` (rank 0's if the world size changed)."""
    from safetensors.torch import load_file

    r = rank if (folder / f"rng-rank{rank}.safetensors").is_file() else 0
    tensor_file, json_file = folder / f"rng-rank{r}.safetensors", folder / f"rng-rank{r}.json"
    if not tensor_file.is_file() or not json_file.is_file():
        return False
    tensors = load_file(str(tensor_file))
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda_"))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    states = json.loads(json_file.read_text())
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    return r == rank


def save_optimizer(folder: Path, state_dict: dict[str, Any]) -> None:
    """Save an optimiser state dict (tensors, numbers, lists, dicts)."""
    torch.save(state_dict, folder / "optimizer.pt")


def load_optimizer(folder: Path) -> dict[str, Any] | None:
    """Load the optimiser state with `weights_only=True` (no arbitrary code in checkpoints)."""
    path = folder / "optimizer.pt"
    return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None


def read_state(folder: Path) -> dict[str, Any]:
    """The checkpoint's state.json."""
    return json.loads((folder / _DONE).read_text())
