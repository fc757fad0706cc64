"""Content digests of files: streamed sha256, memoised per process while a file is unchanged, and the
digest of a folder of files (a model checkpoint) wherever it lives."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from tunekit.errors import ConfigError

# Files that do not change what a model computes.
_IGNORED_NAMES = {"README.md", "LICENSE", "LICENSE.txt", "NOTICE", "USE_POLICY.md"}
_IGNORED_SUFFIXES = {".md", ".lock", ".tmp", ".png", ".jpg"}

_memo: dict[tuple[str, int, int, int], str] = {}


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 hex digest of a file's bytes, read in 1 MiB blocks."""
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def file_sha256_memo(path: str | os.PathLike[str]) -> str:
    """`file_sha256`, reused within this process while the file's (path, size, mtime, inode) are unchanged."""
    resolved = Path(path).resolve()
    st = resolved.stat()
    key = (str(resolved), st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _memo:
        _memo[key] = file_sha256(resolved)
    return _memo[key]


def folder_digest(path: str | os.PathLike[str]) -> str:
    """sha256 (hex) over the relative names and contents of the files of a folder (or of one file).

    Hidden files and documentation (README, licences, images, lock files) are left out, so two copies of
    a checkpoint with the same weights, configs and tokenizer files get the same digest wherever
    they live, and any change to those files changes it.
    """
    path = Path(path)
    return files_digest(path, checkpoint_files(path))


def checkpoint_files(path: Path) -> list[Path]:
    """The files `folder_digest` covers: `path` itself if it is a file, else its files (sorted walk)."""
    if path.is_file():
        return [path]
    files = []
    for root, dirs, names in os.walk(path, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for n in sorted(names):
            if n.startswith(".") or n in _IGNORED_NAMES or Path(n).suffix.lower() in _IGNORED_SUFFIXES:
                continue
            files.append(Path(root) / n)
    if not files:
        raise ConfigError(f"cannot fingerprint model folder {str(path)!r}: it holds no checkpoint files")
    return files


def files_digest(root: Path, files: list[Path]) -> str:
    """sha256 (hex) over `files` by their names relative to `root` (a folder, or a file's folder) and contents."""
    base = root if root.is_dir() else root.parent
    total = hashlib.sha256()
    for f in sorted(files, key=lambda p: p.relative_to(base).as_posix()):
        total.update(f.relative_to(base).as_posix().encode() + b"\0" + file_content_id(f).encode() + b"\n")
    return total.hexdigest()


def file_content_id(path: Path) -> str:
    """Content id of one file: the Hugging Face cache's blob name (already a content hash) when the
    file links into a `blobs/` folder, else the sha256 of its bytes (memoised per size and mtime)."""
    if path.is_symlink():
        target = path.resolve()
        if target.parent.name == "blobs":
            return target.name
    return file_sha256_memo(path)
