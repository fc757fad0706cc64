"""Content hashes of files: streamed sha256, memoised per process while a file is unchanged."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

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
