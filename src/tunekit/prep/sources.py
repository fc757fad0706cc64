"""Opening source files for decoding: soundfile where libsndfile reads the format, ffmpeg otherwise.

Formats libsndfile cannot read (AAC/M4A/MP4) are transcoded once by ffmpeg (the static binary
from imageio-ffmpeg, or one on PATH) into a float WAV in the cache, keyed by the file's content
hash, and read from there block by block. `header` reads the header without decoding; `truncation`
compares what the header promises with what the file holds.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from tunekit.atomic import atomic_path

LOSSY_CONTAINERS = frozenset({"MP3", "MPEG"})
LOSSY_SUBTYPES = {"VORBIS", "OPUS", "MPEG_LAYER_I", "MPEG_LAYER_II", "MPEG_LAYER_III", "ALAW", "ULAW"}
FFMPEG_EXTENSIONS = frozenset({"m4a", "aac", "mp4", "wma", "webm", "mka"})
FFMPEG_LOSSY_CODECS = frozenset({"aac", "mp3", "vorbis", "opus", "wmav2", "wmav1"})


class UndecodableError(Exception):
    """No decoder for this file (format unsupported and no ffmpeg)."""


class CorruptError(Exception):
    """The file could not be read (not audio, damaged header, decoder error)."""


@dataclass(frozen=True)
class Header:
    """What a file's header says, without decoding it."""

    container: str  # WAV, FLAC, MP3, OGG, … (ffmpeg format name for transcoded files)
    codec: str  # PCM_16, FLOAT, VORBIS, MPEG_LAYER_III, aac, …
    sample_rate: int  # Hz
    channels: int  # channel count
    frames: int  # length in samples
    lossy: bool  # whether the codec is lossy
    decoder: str  # soundfile | ffmpeg
    tags: dict[str, str]  # embedded tags (title, artist, copyright, license, comment, genre, date, …)


def ffmpeg_exe() -> str | None:
    """Path of an ffmpeg binary: imageio-ffmpeg's static one, else one on PATH, else None."""
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:  # noqa: BLE001 - any failure means "not available"
        return shutil.which("ffmpeg")


def _sf_header(path: Path) -> Header:
    with sf.SoundFile(str(path)) as f:
        container, codec = f.format, f.subtype
        tags = {k: v for k, v in f.copy_metadata().items() if v}
        return Header(
            container=container,
            codec=codec,
            sample_rate=int(f.samplerate),
            channels=int(f.channels),
            frames=int(f.frames),
            lossy=container in LOSSY_CONTAINERS or codec in LOSSY_SUBTYPES,
            decoder="soundfile",
            tags=tags,
        )


def transcoded_path(cache_dir: str | os.PathLike[str], content_hash: str) -> Path:
    """Where the float-WAV transcode of a file with this content hash lives."""
    return Path(cache_dir) / "transcode" / content_hash[:2] / f"{content_hash}.wav"


def _ffmpeg_probe(exe: str, path: Path) -> tuple[str, str]:
    """(container, codec) from ffmpeg's stream description."""
    proc = subprocess.run([exe, "-hide_banner", "-i", str(path)], capture_output=True, text=True, check=False)
    container, codec = "", ""
    for line in proc.stderr.splitlines():
        line = line.strip()
        if line.startswith("Input #0,") and not container:
            container = line.split(",")[1].strip()
        if "Audio:" in line and not codec:
            codec = line.split("Audio:", 1)[1].strip().split()[0].strip(",")
    if not codec:
        raise CorruptError(f"ffmpeg finds no audio stream in {path.name}")
    return container, codec


def transcode(path: Path, cache_dir: str | os.PathLike[str], content_hash: str) -> Path:
    """Decode `path` with ffmpeg into a float WAV in the cache (streamed to disk, once per content hash)."""
    target = transcoded_path(cache_dir, content_hash)
    if target.is_file():
        return target
    exe = ffmpeg_exe()
    if exe is None:
        raise UndecodableError(f"no decoder for .{path.suffix.lstrip('.')}: install ffmpeg or imageio-ffmpeg")
    with atomic_path(target) as tmp:
        cmd = [
            exe,
            "-nostdin",
            "-v",
            "error",
            "-y",
            "-i",
            str(path),
            "-vn",
            "-map",
            "0:a:0",
            "-c:a",
            "pcm_f32le",
            "-f",
            "wav",
            "-rf64",
            "auto",
            str(tmp),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0 or tmp.stat().st_size == 0:
            raise CorruptError(f"ffmpeg could not decode {path.name}: {proc.stderr.strip()[-300:]}")
    return target


def header(path: Path, cache_dir: str | os.PathLike[str], content_hash: str) -> tuple[Header, Path]:
    """The file's header and the path to decode from (the file itself, or its cached transcode)."""
    ext = path.suffix.lower().lstrip(".")
    try:
        return _sf_header(path), path
    except sf.LibsndfileError as exc:
        if ext not in FFMPEG_EXTENSIONS:
            raise CorruptError(f"cannot read {path.name}: {exc}") from exc
    exe = ffmpeg_exe()
    if exe is None:
        raise UndecodableError(f"no decoder for .{ext} files: install ffmpeg (or imageio-ffmpeg) to read them")
    container, codec = _ffmpeg_probe(exe, path)
    readable = transcode(path, cache_dir, content_hash)
    h = _sf_header(readable)
    return (
        Header(
            container=container.upper(),
            codec=codec,
            sample_rate=h.sample_rate,
            channels=h.channels,
            frames=h.frames,
            lossy=codec.lower() in FFMPEG_LOSSY_CODECS,
            decoder="ffmpeg",
            tags={},
        ),
        readable,
    )


def wav_declared_frames(path: Path) -> int | None:
    """Frames a RIFF/WAVE header's data chunk declares (libsndfile silently shortens truncated WAVs).

    None when the file is not plain RIFF WAVE or the chunk size is a placeholder (streamed WAVs).
    """
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            block_align = None
            while True:
                chunk = f.read(8)
                if len(chunk) < 8:
                    return None
                cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
                if cid == b"fmt ":
                    fmt = f.read(size)
                    if len(fmt) < 16:
                        return None
                    block_align = struct.unpack("<H", fmt[12:14])[0]
                    if size % 2:
                        f.read(1)
                    continue
                if cid == b"data":
                    if not block_align or size in (0, 0xFFFFFFFF):
                        return None
                    return size // block_align
                f.seek(size + (size % 2), os.SEEK_CUR)
    except OSError:
        return None
