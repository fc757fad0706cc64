"""Print a few windows of a prepared dataset with their tags and captions.

    python -m tunekit.prep.show out/demo [N]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def show_windows(out: str | Path, n: int = 4) -> str:
    """The tags, tag sources and captions of the first `n` windows, one block per window."""
    import pyarrow.parquet as pq

    rows = pq.read_table(Path(out) / "windows.parquet").to_pylist()
    lines = [f"{len(rows)} windows in {out}; the first {min(n, len(rows))}:"]
    for row in rows[:n]:
        bpm = f"{row['bpm']:.0f} BPM" if row.get("bpm") else "tempo uncertain"
        key = row.get("key") or "key uncertain"
        sources = json.loads(row["tag_sources"]) if row.get("tag_sources") else {}
        tags = ", ".join(f"{t} ({s})" for t, s in sources.items()) or "none"
        lines += [
            f"- {row['window_id']} [{row['split']}] {row['duration_s']:.1f} s, {bpm}, {key}",
            f"    tags: {tags}",
            *[f"    caption ({src}): {text}" for text, src in zip(row["captions"], row["caption_sources"])],
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(show_windows(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 4))
