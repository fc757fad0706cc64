"""Content-addressed cache of stage results, and of file hashes by (path, size, mtime).

A stage result is stored under a key made of the input audio's key, the stage name and version,
its parameters, its model's digest and any row fields it declares. An entry holds the fields
the stage changed (or its rejection) and the files it wrote (fields ending in `_path`); an entry
whose files are gone or were rewritten since is a miss. Every write is atomic, so a run killed at
any moment leaves only complete entries.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from tunekit.atomic import write_json
from tunekit.file_digest import file_sha256


def params_digest(data: Any) -> str:
    """sha256 of canonical JSON: stable across runs and processes."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def stage_key(
    stage: str, version: int, params: Any, input_key: str, model: str = "", fields: dict[str, Any] | None = None
) -> str:
    """The cache key of one stage applied to one input."""
    payload = {"stage": stage, "version": version, "params": params, "input": input_key, "model": model}
    if fields:
        payload["fields"] = fields
    return params_digest(payload)[:40]


class StageCache:
    """Stage results under `<root>/stages/<stage>/<key[:2]>/<key>.json`."""

    def __init__(self, root: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.out_dir = Path(out_dir)

    def entry_path(self, stage: str, key: str) -> Path:
        """Where the entry for (stage, key) lives."""
        return self.root / "stages" / stage / key[:2] / f"{key}.json"

    def get(self, stage: str, key: str) -> dict[str, Any] | None:
        """The entry, or None if absent, unreadable or its files changed."""
        path = self.entry_path(stage, key)
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError, OSError):
            return None
        for art in entry.get("artifacts", []):
            file = self._resolve(art["root"], art["path"])
            try:
                st = file.stat()
            except OSError:
                return None
            if st.st_size != art["size"] or st.st_mtime_ns != art["mtime_ns"]:
                return None
        return entry

    def put(
        self,
        stage: str,
        key: str,
        update: dict[str, Any] | None,
        rejection: dict[str, str] | None,
        compute_s: float,
    ) -> dict[str, Any]:
        """Record a result; files named by `*_path` fields of `update` are recorded as artifacts."""
        entry: dict[str, Any] = {
            "stage": stage,
            "key": key,
            "update": update,
            "rejection": rejection,
            "artifacts": self._artifacts(update or {}),
            "compute_s": compute_s,
        }
        write_json(self.entry_path(stage, key), entry, indent=None)
        return entry

    def remove_temporaries(self) -> int:
        """Delete the temporary files of writes a killed run left half-done; returns how many.

        Only safe while no other run writes to this cache (the caller holds the output's lock and
        the cache is the output's own)."""
        removed = 0
        for sub in ("stages", "hashes", "sources"):  # sources: a dataset's row audio and links (prep.hf_source)
            base = self.root / sub
            if not base.is_dir():
                continue
            for p in base.rglob(".*.tmp*"):
                if p.is_file() or p.is_symlink():
                    p.unlink(missing_ok=True)
                    removed += 1
        return removed

    def _resolve(self, root: str, path: str) -> Path:
        return (self.root if root == "cache" else self.out_dir) / path

    def _artifacts(self, update: dict[str, Any]) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        items = list(update.items()) + list((update.get("extra") or {}).items())
        for name, value in items:
            if not (name.endswith("_path") and isinstance(value, str) and value):
                continue
            file = Path(value) if os.path.isabs(value) else self.out_dir / value
            root, rel = self._relative(file)
            st = file.stat()
            found.append({"root": root, "path": rel, "size": st.st_size, "mtime_ns": st.st_mtime_ns})
        return found

    def _relative(self, file: Path) -> tuple[str, str]:
        resolved = file.resolve()
        for root, base in (("cache", self.root), ("out", self.out_dir)):
            try:
                return root, resolved.relative_to(base.resolve()).as_posix()
            except ValueError:
                continue
        raise ValueError(f"stage artifact {file} is outside the cache ({self.root}) and the output ({self.out_dir})")


def _hash_entry(cache_root: Path, path: Path) -> Path:
    name = hashlib.sha1(str(path).encode("utf-8")).hexdigest()
    return cache_root / "hashes" / name[:2] / f"{name}.json"


def cached_sha256(path: str | os.PathLike[str], cache_root: str | os.PathLike[str], compute: bool = True) -> str | None:
    """The file's sha256, reused while its (path, size, mtime) are unchanged.

    With compute=False returns None instead of hashing (a cheap probe).
    """
    path = Path(path).resolve()
    st = path.stat()
    entry = _hash_entry(Path(cache_root), path)
    try:
        known = json.loads(entry.read_text(encoding="utf-8"))
        if known["size"] == st.st_size and known["mtime_ns"] == st.st_mtime_ns:
            return str(known["sha256"])
    except (FileNotFoundError, ValueError, KeyError, OSError):
        pass
    if not compute:
        return None
    digest = file_sha256(path)
    write_json(
        entry, {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}, indent=None
    )
    return digest
