"""Read the latent windows an ACE-Step prep run wrote (`windows.parquet` + per-track safetensors) and serve
flow-matching training examples from them.

Each window stores its VAE latent distribution (mean and std, [T, C]) and the condition encoder's output
([L, H], unpadded); `latents/<digest12>/model.safetensors` holds the checkpoint's null condition and silence
latent (see data/README.md, "Prep output"). A training example draws a fresh latent x0 = mean + std·ε.

The DiT takes no attention mask, so a batch never pads: every batch holds windows of one (T, L) only. With
batch size 1 (the default) that is trivially so; larger batches come from length buckets. As for the token
windows, every example is a pure function of (seed, global sample index), so a resumed run reads exactly what
an uninterrupted one would have read, and `tunekit.data.tokens.StepBatches` serves the indices.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tunekit.data.windows import PreparedWindows
from tunekit.errors import ConfigError

LATENT_COLUMNS = ("latents_file", "latent_frames", "cond_length")
MODEL_FILE = "model.safetensors"  # once per checkpoint beside the track files: null condition, silence latent
_OPEN_FILES = 32  # track files kept open (memory-mapped) at once

# Streams of the per-sample random draws, so no two draws share a generator.
_PERMUTATION, _LATENT, _BATCHES, _VALID_LATENT = 0, 2, 3, 4


@dataclass(frozen=True)
class LatentInfo:
    """The checkpoint the latents and conditions were made with; the trained DiT must match it."""

    model: str  # configured id of the ACE-Step checkpoint (`latents.model` of the prep run)
    digest: str  # digest of its files (tunekit.models.digest.model_digest)
    variant: str  # turbo | base | sft
    sample_rate: int  # audio samples per second the VAE encodes (48000)
    frame_rate: float  # latent frames per second (25 for the real VAE)
    channels: int  # latent channels C (64 real)
    hidden: int  # condition width H

    @property
    def codec(self) -> str:
        """What turned the audio into training inputs, for plans and model cards."""
        return f"{self.model} VAE latents"


@dataclass(frozen=True)
class LatentExample:
    """One training or validation example before collation."""

    x0: np.ndarray  # (T, C) float32: a sample of the window's latent distribution
    cond: np.ndarray  # (L, H) float32: the condition encoder's output for the window
    drop: bool  # condition dropout: train this sample on the null condition (classifier-free guidance)
    window_id: str
    index: int  # global sample index (training) or position (validation): the key of its random draws


def _data_error(message: str, key: str = "data.path") -> ConfigError:
    return ConfigError(message, key=key)


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, *[int(k) for k in key]])


class LatentSet(PreparedWindows):
    """The latent windows of one ACE-Step prep output, with their conditions, captions, lyrics and split."""

    ENCODED = ("latents_file", "latent_frames")
    REQUIRED = ("cond_length",)
    OPTIONAL = ("caption", "captions", "lyrics", "language", "license", "audio_path", "offset_s", "duration_s")
    INPUTS = "ACE-Step latents"
    PIPELINE = "pipeline=acestep, ending in the latents stage"

    def __init__(self, root: str | Path, key: str = "data.path") -> None:
        super().__init__(root, key)
        self.latents_file = np.asarray(self.col("latents_file"), dtype=object)
        self.frames = np.asarray(self.col("latent_frames"), dtype=np.int64)  # T per window
        self.cond_length = np.asarray([n or 0 for n in self.col("cond_length")], dtype=np.int64)  # L per window
        self.lyrics = [x or "" for x in self.col("lyrics")]
        self.language = self.col("language")
        self.captions: list[str] = []
        for many, one in zip(self.col("captions"), self.col("caption")):
            variants = [c for c in (many or []) if isinstance(c, str)]
            self.captions.append(one or (variants[0] if variants else ""))
        self.done_reading()
        folders = sorted({str(Path(f).parent) for f in self.latents_file})
        if len(folders) != 1:
            raise self.error(f"{self.root}/windows.parquet mixes latents of several checkpoints ({', '.join(folders)});"
                             " prepare with one `latents.model` (run `tunekit prep` into a fresh out=)")
        self.info, self.null_condition, self.silence_latent = self._model_file(self.root / folders[0] / MODEL_FILE)
        self.check_splits()
        self._files: OrderedDict[str, Any] = OrderedDict()

    def _model_file(self, path: Path) -> tuple[LatentInfo, Any, Any]:
        """The checkpoint's record: its metadata, null condition [1, 1, H] and silence latent [1, S, C]."""
        from safetensors import safe_open

        if not path.is_file():
            raise _data_error(f"{path} is missing: the prep run did not finish its latents stage; re-run the same "
                              "`tunekit prep` command", self.key)
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k).float() for k in f.keys()}
        need = ("model", "digest", "variant", "sample_rate", "latent_rate", "channels", "hidden")
        lacking = [k for k in need if k not in meta] + [k for k in ("null_condition", "silence_latent")
                                                         if k not in tensors]
        if lacking:
            raise _data_error(f"{path} lacks {', '.join(lacking)}; re-run `tunekit prep pipeline=acestep` into a "
                              "new out=", self.key)
        info = LatentInfo(model=meta["model"], digest=meta["digest"], variant=meta["variant"],
                          sample_rate=int(meta["sample_rate"]), frame_rate=float(meta["latent_rate"]),
                          channels=int(meta["channels"]), hidden=int(meta["hidden"]))
        null, silence = tensors["null_condition"], tensors["silence_latent"]
        if tuple(null.shape) != (1, 1, info.hidden) or silence.ndim != 3 or silence.shape[2] != info.channels:
            raise _data_error(f"{path}: null_condition {tuple(null.shape)} / silence_latent {tuple(silence.shape)} "
                              f"do not match hidden={info.hidden}, channels={info.channels}; re-run prep", self.key)
        return info, null, silence

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the open files (DataLoader workers reopen them lazily)."""
        state = dict(self.__dict__)
        state["_files"] = OrderedDict()
        return state

    def shape(self, row: int) -> tuple[int, int]:
        """(T, L) of window `row`: windows batch together only when these are equal."""
        return int(self.frames[row]), int(self.cond_length[row])

    def _file(self, rel: str) -> Any:
        f = self._files.get(rel)
        if f is None:
            from safetensors import safe_open

            f = safe_open(str(self.root / rel), framework="pt")
            self._files[rel] = f
            if len(self._files) > _OPEN_FILES:
                self._files.popitem(last=False)
        else:
            self._files.move_to_end(rel)
        return f

    def read(self, row: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mean (T, C), std (T, C), cond (L, H)) of window `row`, float32."""
        f, wid = self._file(self.latents_file[row]), self.window_id[row]
        mean, std, cond = (f.get_tensor(f"{wid}/{part}").float().numpy() for part in ("mean", "std", "cond"))
        return mean, std, cond

    def check_files(self, rows: np.ndarray | None = None) -> list[str]:
        """Problems with the files behind `rows` (at most five): missing files or tensors, and shapes that disagree
        with windows.parquet or the checkpoint's channels and width. Only the files' headers are read."""
        from safetensors import safe_open

        problems: list[str] = []
        rows = np.arange(len(self)) if rows is None else rows
        by_file: dict[str, list[int]] = {}
        for r in rows:
            by_file.setdefault(self.latents_file[r], []).append(int(r))
        c, h = self.info.channels, self.info.hidden
        for rel, members in sorted(by_file.items()):
            path = self.root / rel
            if not path.is_file():
                problems.append(f"latents file {path} is missing")
            else:
                with safe_open(str(path), framework="pt") as f:
                    keys = set(f.keys())
                    for r in members:
                        wid, (t, n) = self.window_id[r], self.shape(r)
                        want = {"mean": (t, c), "std": (t, c), "cond": (n, h)}
                        for part, shape in want.items():
                            name = f"{wid}/{part}"
                            if name not in keys:
                                problems.append(f"{path} has no tensor {name}")
                                break
                            got = tuple(f.get_slice(name).get_shape())
                            if got != shape:
                                problems.append(f"{path}: {name} is {got}, windows.parquet and the checkpoint say "
                                                f"{shape}")
                                break
            if len(problems) >= 5:
                break
        return problems[:5]


class LengthBuckets:
    """Which window each training sample index reads, such that every aligned run of `batch_size` indices
    (the micro-batches `StepBatches` hands out) holds windows of one (T, L).

    Epoch `e` permutes the windows (seed, e), deals them into buckets of equal (T, L) in that order, cuts each
    bucket into full batches (the remainder waits for another epoch, where the permutation differs) and
    shuffles the batches (seed, e). Every epoch has the same number of batches, so sample index g maps to its
    epoch without any state; with batch size 1 this is a plain shuffle of the windows.
    """

    def __init__(self, shapes: list[tuple[int, int]], batch_size: int, seed: int) -> None:
        self.shapes = list(shapes)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        counts: dict[tuple[int, int], int] = {}
        for s in self.shapes:
            counts[s] = counts.get(s, 0) + 1
        self.per_epoch = sum(n // self.batch_size for n in counts.values()) * self.batch_size
        self.unbatchable = sum(n for n in counts.values() if n < self.batch_size)  # windows never trained
        self._plan: tuple[int, np.ndarray] | None = None

    def plan(self, epoch: int) -> np.ndarray:
        """Positions (into `shapes`) in the order epoch `epoch` reads them."""
        if self._plan is not None and self._plan[0] == epoch:
            return self._plan[1]
        order = _rng(self.seed, _PERMUTATION, epoch).permutation(len(self.shapes))
        buckets: dict[tuple[int, int], list[int]] = {}
        for i in order:
            buckets.setdefault(self.shapes[i], []).append(int(i))
        b = self.batch_size
        batches = [members[k : k + b] for members in buckets.values() for k in range(0, len(members) - b + 1, b)]
        shuffled = _rng(self.seed, _BATCHES, epoch).permutation(len(batches))
        flat = np.asarray([i for j in shuffled for i in batches[j]], dtype=np.int64)
        self._plan = (epoch, flat)
        return flat

    def position(self, g: int) -> int:
        """The position (into `shapes`) sample index `g` reads."""
        if self.per_epoch == 0:
            raise _data_error(f"no {self.batch_size} training windows share one length (latent frames and condition "
                              "tokens), and a batch is never padded: set trainer.batch_size=1 and raise "
                              "trainer.grad_accum", "trainer.batch_size")
        epoch, pos = divmod(int(g), self.per_epoch)
        return int(self.plan(epoch)[pos])


class TrainLatents:
    """Training examples indexed by global sample index `g` (an endless, epoch-shuffled, length-bucketed stream).

    The window comes from `LengthBuckets`; the latent draw ε and the condition-dropout decision from
    generators seeded by (seed, g).
    """

    def __init__(self, latents: LatentSet, rows: np.ndarray, seed: int, cond_dropout: float = 0.0,
                 batch_size: int = 1) -> None:
        if len(rows) == 0:
            raise _data_error(f"{latents.root} has no training windows")
        self.latents = latents
        self.rows = np.asarray(rows)
        self.seed = int(seed)
        self.cond_dropout = float(cond_dropout)
        self.buckets = LengthBuckets([latents.shape(int(r)) for r in self.rows], batch_size, seed)

    def __len__(self) -> int:
        return len(self.rows)

    def row_of(self, g: int) -> int:
        """The window row sample `g` reads."""
        return int(self.rows[self.buckets.position(g)])

    def __getitem__(self, g: int) -> LatentExample:
        row = self.row_of(g)
        mean, std, cond = self.latents.read(row)
        rng = _rng(self.seed, _LATENT, int(g))
        x0 = mean + std * rng.standard_normal(mean.shape, dtype=np.float32)
        drop = bool(rng.random() < self.cond_dropout)
        return LatentExample(x0=x0, cond=cond, drop=drop, window_id=str(self.latents.window_id[row]), index=int(g))


class EvalLatents:
    """Validation examples: each held-out window once, its latent drawn with a generator seeded by (seed,
    position), so every evaluation scores the same draws."""

    def __init__(self, latents: LatentSet, rows: np.ndarray, seed: int) -> None:
        self.latents = latents
        self.rows = np.asarray(rows)
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> LatentExample:
        row = int(self.rows[i])
        mean, std, cond = self.latents.read(row)
        x0 = mean + std * _rng(self.seed, _VALID_LATENT, int(i)).standard_normal(mean.shape, dtype=np.float32)
        return LatentExample(x0=x0, cond=cond, drop=False, window_id=str(self.latents.window_id[row]), index=int(i))


def collate_latents(examples: list[LatentExample]) -> dict[str, Any]:
    """Stack examples of one (T, L) into a batch: x0 (B, T, C), cond (B, L, H), drop (B,), index (B,).

    Windows of different lengths are refused rather than padded: the DiT would attend to the padding.
    """
    import torch

    shapes = {(e.x0.shape, e.cond.shape) for e in examples}
    if len(shapes) != 1:
        raise ValueError(f"a batch mixes window shapes {sorted(shapes)}; batches must hold windows of one length "
                         "(the DiT takes no attention mask, so padding would be attended)")
    return {
        "x0": torch.from_numpy(np.stack([e.x0 for e in examples])),
        "cond": torch.from_numpy(np.stack([e.cond for e in examples])),
        "drop": torch.tensor([e.drop for e in examples], dtype=torch.bool),
        "index": torch.tensor([e.index for e in examples], dtype=torch.long),
        "window_ids": [e.window_id for e in examples],
    }
