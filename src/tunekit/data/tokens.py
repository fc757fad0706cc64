"""Read the token windows a prep run wrote (`windows.parquet` + per-track `.npy` files) and serve training
examples from them.

Every example is a pure function of (seed, global sample index): the window, the crop inside it, the
caption variant and the condition-dropout decision. A run resumed at sample index `g` therefore sees
exactly what an uninterrupted run would have seen, and data-loader workers need no shared state.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tunekit.audio.channels import to_mono
from tunekit.audio.resample import resample
from tunekit.data.windows import PreparedWindows
from tunekit.errors import ConfigError

TOKEN_COLUMNS = (
    "tokens_path",
    "tokens_offset",
    "tokens_frames",
    "tokens_codec",
    "tokens_codec_hash",
    "tokens_frame_rate",
    "tokens_streams",
)


@dataclass(frozen=True)
class TokenInfo:
    """The codec the tokens were made with; a model must match it to train on them."""

    codec: str  # model id of the codec (e.g. facebook/encodec_32khz)
    codec_hash: str  # digest of the codec's files (tunekit.models.digest.model_digest)
    frame_rate: float  # token frames per second
    n_streams: int  # token streams per frame (codebooks; 2 x codebooks for stereo, interleaved L/R)


@dataclass(frozen=True)
class Example:
    """One training or validation example before collation."""

    codes: np.ndarray  # (streams, n_frames) int64
    n_frames: int  # valid frames (the rest of a padded batch is masked)
    caption: str  # the caption variant chosen for this sample
    drop: bool  # condition dropout: train this sample on the empty condition (classifier-free guidance)
    window_id: str  # which window the crop came from
    index: int  # global sample index (or validation position)
    chroma: np.ndarray | None = None  # (chroma_frames, 12) one-hot melody condition, melody models only
    drop_melody: bool = False  # melody models: train this sample without its melody (text only)


def _data_error(message: str) -> ConfigError:
    return ConfigError(message, key="data.path")


class TokenSet(PreparedWindows):
    """The tokenised windows of one prep output, with their captions and track-level split."""

    ENCODED = ("tokens_path", "tokens_frames")
    REQUIRED = TOKEN_COLUMNS
    OPTIONAL = ("caption", "captions", "audio_path", "offset_s", "duration_s", "license")
    INPUTS = "tokenised windows"
    PIPELINE = "pipeline=musicgen, ending in the tokens stage"

    def __init__(self, root: str | Path, key: str = "data.path") -> None:
        super().__init__(root, key)
        self.tokens_path = np.asarray(self.col("tokens_path"), dtype=object)
        self.offset = np.asarray(self.col("tokens_offset"), dtype=np.int64)
        self.frames = np.asarray(self.col("tokens_frames"), dtype=np.int64)
        self.captions: list[list[str]] = []
        for many, one in zip(self.col("captions"), self.col("caption")):
            variants = [c for c in (many or []) if isinstance(c, str)]
            self.captions.append(variants or [one or ""])
        self.info = self._token_info(self.col(c) for c in TOKEN_COLUMNS[3:])
        self.done_reading()
        self.check_splits()
        self._maps: dict[str, np.ndarray] = {}

    def _check_columns(self, windows: Path, names: set[str]) -> None:
        if "captions" not in names and "caption" not in names:
            raise self.error(f"{windows} has no caption/captions column: run `tunekit prep` with the captions stage "
                             "first")

    def _token_info(self, cols: Any) -> TokenInfo:
        codec, codec_hash, rate, streams = cols
        combos = {(c, h, float(r), int(s)) for c, h, r, s in zip(codec, codec_hash, rate, streams)}
        if len(combos) != 1:
            listed = "; ".join(f"{c} ({s} streams, {r} Hz)" for c, _, r, s in sorted(combos, key=str))
            raise self.error(
                f"{self.root}/windows.parquet mixes tokens from several codecs ({listed}); re-tokenise everything "
                "with one codec (run `tunekit prep` into a fresh out=)"
            )
        c, h, r, s = combos.pop()
        return TokenInfo(codec=str(c), codec_hash=str(h), frame_rate=r, n_streams=s)

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the open memory maps (DataLoader workers reopen them lazily, copying nothing)."""
        state = dict(self.__dict__)
        state["_maps"] = {}
        return state

    def _map(self, rel: str) -> np.ndarray:
        arr = self._maps.get(rel)
        if arr is None:
            arr = np.load(self.root / rel, mmap_mode="r")
            self._maps[rel] = arr
        return arr

    def read(self, row: int, start: int = 0, frames: int | None = None) -> np.ndarray:
        """Tokens of window `row` from frame `start`, (streams, frames) int64, ready for the model."""
        n = int(self.frames[row]) - start if frames is None else frames
        arr = self._map(self.tokens_path[row])
        first = int(self.offset[row]) + start
        return np.asarray(arr[first : first + n], dtype=np.int64).T.copy()

    def check_files(self, rows: np.ndarray | None = None, vocab_size: int | None = None) -> list[str]:
        """Problems with the token files behind `rows` (missing, wrong shape/dtype, out-of-range codes)."""
        problems: list[str] = []
        rows = np.arange(len(self)) if rows is None else rows
        need: dict[str, int] = {}
        for r in rows:
            end = int(self.offset[r] + self.frames[r])
            need[self.tokens_path[r]] = max(need.get(self.tokens_path[r], 0), end)
        for rel, end in sorted(need.items()):
            path = self.root / rel
            if not path.is_file():
                problems.append(f"token file {path} is missing")
                continue
            try:
                arr = self._map(rel)
            except (OSError, ValueError) as exc:
                problems.append(f"token file {path} cannot be read: {exc}")
                continue
            if arr.ndim != 2 or arr.shape[1] != self.info.n_streams or arr.shape[0] < end:
                problems.append(
                    f"token file {path} has shape {arr.shape}; windows.parquet needs ({end}+, {self.info.n_streams})"
                )
            elif arr.dtype != np.uint16:
                problems.append(f"token file {path} is {arr.dtype}, expected uint16")
            elif vocab_size is not None and len(arr) and int(np.max(arr[: min(len(arr), 4096)])) >= vocab_size:
                problems.append(f"token file {path} holds codes >= {vocab_size}, the model's codebook size")
            if len(problems) >= 5:
                break
        return problems


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, *[int(k) for k in key]])


class TrainWindows:
    """Training examples indexed by global sample index `g` (an endless, epoch-shuffled stream).

    Epoch `e = g // n` visits every training window once in a permutation seeded by (seed, e); the
    crop start, caption variant and condition dropout come from a generator seeded by (seed, g).
    """

    def __init__(
        self,
        tokens: TokenSet,
        rows: np.ndarray,
        crop_frames: int,
        seed: int,
        cond_dropout: float = 0.0,
        random_crop: bool = True,
        caption_variants: bool = True,
        melody: MelodySource | None = None,
        melody_dropout: float = 0.0,
    ) -> None:
        if len(rows) == 0:
            raise _data_error(f"{tokens.root} has no training windows")
        self.tokens = tokens
        self.rows = np.asarray(rows)
        self.crop_frames = int(crop_frames)
        self.seed = int(seed)
        self.cond_dropout = float(cond_dropout)
        self.random_crop = random_crop
        self.caption_variants = caption_variants
        self.melody = melody
        self.melody_dropout = float(melody_dropout)
        self._perm: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def row_of(self, g: int) -> int:
        """The window row sample `g` reads."""
        n = len(self.rows)
        epoch, pos = divmod(int(g), n)
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, _rng(self.seed, 0, epoch).permutation(n))
        return int(self.rows[self._perm[1][pos]])

    def __getitem__(self, g: int) -> Example:
        row = self.row_of(g)
        rng = _rng(self.seed, 1, int(g))
        total = int(self.tokens.frames[row])
        n = min(total, self.crop_frames)
        start = int(rng.integers(0, total - n + 1)) if self.random_crop and total > n else 0
        variants = self.tokens.captions[row]
        k = int(rng.integers(0, len(variants))) if self.caption_variants else 0
        drop = bool(rng.random() < self.cond_dropout)
        drop_melody = bool(rng.random() < self.melody_dropout)
        chroma = self.melody.chroma(row, start, n) if self.melody is not None else None
        return Example(
            codes=self.tokens.read(row, start, n),
            n_frames=n,
            caption=variants[k],
            drop=drop,
            window_id=str(self.tokens.window_id[row]),
            index=int(g),
            chroma=chroma,
            drop_melody=drop_melody and self.melody is not None,
        )


class EvalWindows:
    """Validation examples: each held-out window once, cropped from its start, caption variant 0."""

    def __init__(
        self, tokens: TokenSet, rows: np.ndarray, crop_frames: int, melody: MelodySource | None = None
    ) -> None:
        self.tokens = tokens
        self.rows = np.asarray(rows)
        self.crop_frames = int(crop_frames)
        self.melody = melody

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Example:
        row = int(self.rows[i])
        n = min(int(self.tokens.frames[row]), self.crop_frames)
        chroma = self.melody.chroma(row, 0, n) if self.melody is not None else None
        return Example(
            codes=self.tokens.read(row, 0, n),
            n_frames=n,
            caption=self.tokens.captions[row][0],
            drop=False,
            window_id=str(self.tokens.window_id[row]),
            index=int(i),
            chroma=chroma,
        )


class MelodySource:
    """Chroma of a window's audio (the melody condition of MusicGen-melody), read from prep's audio files."""

    def __init__(
        self, tokens: TokenSet, sample_rate: int = 32000, chroma_kwargs: dict[str, Any] | None = None
    ) -> None:
        if any(p is None for p in tokens.audio_path) or any(o is None for o in tokens.offset_s):
            raise _data_error(
                f"{tokens.root}/windows.parquet lacks audio_path/offset_s, which melody models need for chroma"
            )
        self.tokens = tokens
        self.sample_rate = sample_rate
        self.chroma_kwargs = dict(chroma_kwargs or {})

    def chroma(self, row: int, start_frame: int, n_frames: int) -> np.ndarray:
        """(frames, 12) one-hot chroma of the audio under tokens [start_frame, start_frame + n_frames)."""
        import soundfile as sf

        from tunekit.data.chroma import melody_chroma

        rate_tokens = self.tokens.info.frame_rate
        path = self.tokens.root / str(self.tokens.audio_path[row])
        info = sf.info(str(path))
        begin = float(self.tokens.offset_s[row]) + start_frame / rate_tokens
        first = int(round(begin * info.samplerate))
        count = int(round(n_frames / rate_tokens * info.samplerate))
        audio, rate = sf.read(str(path), start=first, frames=count, dtype="float32", always_2d=True)
        mono = resample(to_mono(audio.T), rate, self.sample_rate)
        return melody_chroma(mono.astype(np.float32), self.sample_rate, **self.chroma_kwargs)


def collate(examples: list[Example]) -> dict[str, Any]:
    """Stack examples into a batch padded to the longest: codes (B, K, T) int64, n_frames (B,), captions, drop."""
    import torch

    longest = max(e.n_frames for e in examples)
    k = examples[0].codes.shape[0]
    codes = torch.zeros((len(examples), k, longest), dtype=torch.long)
    for i, e in enumerate(examples):
        codes[i, :, : e.n_frames] = torch.from_numpy(e.codes)
    batch: dict[str, Any] = {
        "codes": codes,
        "n_frames": torch.tensor([e.n_frames for e in examples], dtype=torch.long),
        "captions": [e.caption for e in examples],
        "drop": torch.tensor([e.drop for e in examples], dtype=torch.bool),
        "window_ids": [e.window_id for e in examples],
        "index": torch.tensor([e.index for e in examples], dtype=torch.long),
    }
    if examples[0].chroma is not None:
        longest_c = max(len(e.chroma) for e in examples)  # type: ignore[arg-type]
        chroma = torch.zeros((len(examples), longest_c, examples[0].chroma.shape[1]))  # type: ignore[union-attr]
        for i, e in enumerate(examples):
            c = torch.from_numpy(np.asarray(e.chroma, dtype=np.float32))
            reps = -(-longest_c // len(c))  # a shorter melody repeats, as transformers pads one
            chroma[i] = c.repeat(reps, 1)[:longest_c]
        batch["chroma"] = chroma
        batch["drop_melody"] = torch.tensor([e.drop_melody for e in examples], dtype=torch.bool)
    return batch


class StepBatches:
    """Batch sampler for a DataLoader: for each optimiser step from `start_step`, the micro-batches of this rank.

    Step `s` consumes samples [p + (s - start_step)*G, p + (s - start_step + 1)*G) with G = micro_batch x accum x
    world and p = `start_sample` (by default start_step*G); micro-batch `m` of rank `r` takes G's slice number
    m*world + r. The position is the number of samples consumed, so resuming is exact, also on another number
    of processes: the stream continues where the checkpoint left it.
    """

    def __init__(
        self, start_step: int, max_steps: int, micro_batch: int, accum: int, world: int = 1, rank: int = 0,
        start_sample: int | None = None,
    ) -> None:
        self.start_step = start_step
        self.max_steps = max_steps
        self.micro_batch = micro_batch
        self.accum = accum
        self.world = world
        self.rank = rank
        self.start_sample = start_step * self.global_batch if start_sample is None else start_sample

    @property
    def global_batch(self) -> int:
        return self.micro_batch * self.accum * self.world

    def __len__(self) -> int:
        return max(0, self.max_steps - self.start_step) * self.accum

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start_step, self.max_steps):
            base = self.start_sample + (step - self.start_step) * self.global_batch
            for m in range(self.accum):
                first = base + (m * self.world + self.rank) * self.micro_batch
                yield list(range(first, first + self.micro_batch))
