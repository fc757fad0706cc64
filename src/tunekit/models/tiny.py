"""The tiny-model kit: seeded, randomly initialised models of the real classes, built once into the cache.

`ensure_tiny(name)` returns `<cache>/tiny/<name>/`, building it first if needed: the builder writes
into a temporary folder next to it, which is renamed into place, so a reader never sees half a
model and two processes building at once both end up with one complete copy. The builders live
next to each family's loader (`build_tiny_*`) and write the real checkpoint's on-disk layout.
The offline tokenizers the tiny text encoders use are built here from a small music word list.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from importlib import import_module
from pathlib import Path
from typing import Any

from tunekit import paths
from tunekit.atomic import write_json
from tunekit.errors import ConfigError
from tunekit.models.hub import quiet_transformers

MANIFEST = "tunekit-tiny.json"
TINY_VERSION = 2  # bump when a builder changes: cached tiny models of another version are rebuilt

# name -> (module, builder function, keyword arguments); imported only when that model is built.
_BUILDERS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "musicgen": ("tunekit.models.musicgen", "build_tiny_musicgen", {"stereo": False, "melody": False}),
    "musicgen-stereo": ("tunekit.models.musicgen", "build_tiny_musicgen", {"stereo": True, "melody": False}),
    "musicgen-melody": ("tunekit.models.musicgen", "build_tiny_musicgen", {"stereo": False, "melody": True}),
    "musicgen-stereo-melody": ("tunekit.models.musicgen", "build_tiny_musicgen", {"stereo": True, "melody": True}),
    "acestep-turbo": ("tunekit.models.acestep_tiny", "build_tiny_acestep", {"variant": "turbo"}),
    "acestep-base": ("tunekit.models.acestep_tiny", "build_tiny_acestep", {"variant": "base"}),
    "acestep-sft": ("tunekit.models.acestep_tiny", "build_tiny_acestep", {"variant": "sft"}),
    "encodec_32khz": ("tunekit.models.encodec", "build_tiny_encodec", {}),
    "htdemucs": ("tunekit.models.demucs", "build_tiny_demucs", {"name": "htdemucs"}),
    "htdemucs_ft": ("tunekit.models.demucs", "build_tiny_demucs", {"name": "htdemucs_ft"}),
    "htdemucs_6s": ("tunekit.models.demucs", "build_tiny_demucs", {"name": "htdemucs_6s"}),
    "hdemucs_mmi": ("tunekit.models.demucs", "build_tiny_demucs", {"name": "hdemucs_mmi"}),
    "mdx_extra": ("tunekit.models.demucs", "build_tiny_demucs", {"name": "mdx_extra"}),
    "clap": ("tunekit.models.clap", "build_tiny_clap", {}),
    "vggish": ("tunekit.models.vggish", "build_tiny_vggish", {}),
}
TINY_NAMES: tuple[str, ...] = tuple(_BUILDERS)

_thread_lock = threading.Lock()

# Words the tiny tokenizers know as whole tokens; anything else falls back to characters.
MUSIC_WORDS: tuple[str, ...] = tuple("""
a an the and or with without of in on at for to by from into over under no not very slightly
slow fast medium upbeat downbeat calm dark bright happy sad melancholic uplifting relaxing tense
lofi lo-fi hip hop jazz rock pop blues funk soul disco house techno trance dubstep drum bass
ambient electronic acoustic orchestral classical folk country reggae metal punk indie latin
piano guitar drums bass synth synthesizer vocals vocal voice choir strings violin cello viola
flute clarinet saxophone trumpet trombone horn organ harp bells pad lead pluck arpeggio
kick snare hat hihat cymbal clap percussion shaker beat beats loop groove rhythm melody harmony
chord chords riff solo intro outro verse chorus bridge drop build
warm soft loud quiet energetic mellow dreamy epic cinematic chill smooth gritty distorted clean
vintage modern retro analog digital lush sparse dense heavy light deep airy
tempo bpm key major minor sharp flat time signature instrumental song track music sound
male female singer rap spoken background foreground reverb delay echo
""".split())


def _tiny_root(cache_dir: str | os.PathLike[str] | None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir else paths.cache_dir()


def tiny_path(name: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the tiny model `name` lives (built or not)."""
    return _tiny_root(cache_dir) / "tiny" / name


def _is_complete(folder: Path, name: str) -> bool:
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return manifest.get("name") == name and manifest.get("version") == TINY_VERSION


@contextlib.contextmanager
def _build_lock(lock_file: Path) -> Iterator[None]:
    """Serialise builds: across threads with a lock, across processes with flock where available."""
    with _thread_lock:
        try:
            import fcntl
        except ImportError:  # not POSIX: the atomic rename alone keeps the cache consistent
            yield
            return
        with open(lock_file, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def builder(name: str) -> Callable[[Path], None]:
    """The function that writes tiny model `name` into an (empty) folder."""
    if name not in _BUILDERS:
        raise KeyError(f"unknown tiny model {name!r}; known: {', '.join(TINY_NAMES)}")
    module, function, kwargs = _BUILDERS[name]
    build = getattr(import_module(module), function)
    return lambda out: build(out, **kwargs)


def ensure_tiny(name: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return `<cache>/tiny/<name>/`, building it first (atomically) when missing or of an older version."""
    final = tiny_path(name, cache_dir)
    if _is_complete(final, name):
        return final
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the tiny-model cache {str(final.parent)!r} ({exc.strerror}); set models.cache_dir "
            "(or $TUNEKIT_CACHE) to a writable folder",
            key="models.cache_dir",
        ) from exc
    with _build_lock(final.parent / f".{name}.lock"):
        if _is_complete(final, name):  # another thread or process built it while we waited
            return final
        build = builder(name)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=final.parent))
        try:
            with quiet_transformers():
                build(tmp)
            _fsync_files(tmp)
            write_json(tmp / MANIFEST, {"name": name, "version": TINY_VERSION, "random_weights": True})
            if final.exists():  # an older version: move it aside, then drop it
                stale = final.parent / f".{name}.stale-{os.getpid()}-{threading.get_ident()}"
                with contextlib.suppress(FileNotFoundError):
                    os.rename(final, stale)
                    shutil.rmtree(stale, ignore_errors=True)
            try:
                os.rename(tmp, final)
            except OSError:
                if not _is_complete(final, name):  # not a lost race: a real failure
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _fsync_files(folder: Path) -> None:
    """Flush every file the builder wrote, so the renamed folder never holds truncated files."""
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb+") as handle:
                os.fsync(handle.fileno())


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's CPU generator for a build and restore the caller's generator state afterwards."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def tiny_t5_tokenizer() -> Any:
    """A T5 tokenizer (Unigram, the same class and pipeline as t5-base's) over `MUSIC_WORDS` and characters.

    Whole words score higher than their characters, so known words are single tokens and any
    other text still encodes (character by character, `<unk>` for characters outside the set).
    """
    from transformers import T5Tokenizer

    chars = sorted(set("abcdefghijklmnopqrstuvwxyz0123456789.,;:'\"-!?()/&+#%"))
    vocab: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [(c, -8.0) for c in chars]
    vocab += [("\u2581" + c, -8.5) for c in chars]
    vocab += [("\u2581" + w, -4.0) for w in MUSIC_WORDS]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=512)


def tiny_roberta_tokenizer() -> Any:
    """A RoBERTa tokenizer (byte-level BPE, like CLAP's) with merges trained on `MUSIC_WORDS`."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import RobertaTokenizer

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # roberta-base order: <s>=0, <pad>=1, </s>=2
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [" ".join(MUSIC_WORDS), *(f"{a} {b}" for a, b in zip(MUSIC_WORDS, MUSIC_WORDS[1:], strict=False))]
    bpe.train_from_iterator(corpus, trainer=trainer)
    model_json = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model_json["merges"]]
    return RobertaTokenizer(vocab=model_json["vocab"], merges=merges, model_max_length=512)


def save_processor_files(out: Path, processor_class: str, feature_extractor: Any, tokenizer: Any) -> None:
    """Save a processor the way the real Hub repositories hold it: preprocessor_config.json and the
    tokenizer files side by side, both naming the processor class `AutoProcessor` assembles."""
    feature_extractor.save_pretrained(out)
    config_file = Path(out) / "preprocessor_config.json"
    write_json(config_file, {**json.loads(config_file.read_text()), "processor_class": processor_class})
    tokenizer._set_processor_class(processor_class)
    tokenizer.save_pretrained(out)
