"""Log an evaluation to Weights & Biases: the metrics, a metrics table, a table of prompts with audio and
spectrograms per set, every clip as its own audio and image media, and bar charts; then a W&B Report of the run
(`tunekit.eval.wandb_report`: saved online, its spec written beside the run offline). Offline (files under
`<out>/wandb/`, sync later with `wandb sync`) when no API key is configured. wandb is imported only here.

Where the media go: wandb stores a table's cells as a run-table artifact whose files it stages under its
data dir (`~/.local/share/wandb` by default; the table file in the run folder only names their types). An
offline evaluation stages them inside `<out>/wandb/data` instead, so the run folder holds everything `wandb
sync` uploads; each clip is also logged as a plain media key (`eval/audio/<set>/<id>`,
`eval/spectrogram/<set>/<id>`), which lands in the run's own `files/media`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tunekit.audio.channels import to_mono
from tunekit.eval.score import SetScores
from tunekit.loggers import wandb_mode

METRICS_TABLE_KEY = "eval/metrics_table"  # one row per metric: each set, the reference, the paired difference
CLIPS_KEY = "eval/clips"  # one row per prompt: audio and spectrogram per set
REPORT_URL_KEY = "eval/report_url"  # the saved W&B Report (online only)
SET_SCORES = ("clap_score", "chroma_cosine")  # one number per set (higher is better), beside the embeddings' blocks


def flat_metrics(metrics: dict[str, Any], set_names: list[str], embeddings: list[str]) -> dict[str, float]:
    """`<set>/<embedding>/fad`, `…/fad_inf`, `…/kad`, `…/n`, `<set>/clap_score` (and `chroma_cosine`), the
    reference floor/ceiling and each fine-tuned − base `delta/<metric>` with its interval."""
    out: dict[str, float] = {}
    for name in set_names:
        block = metrics.get(name, {})
        for emb in embeddings:
            entry = block.get(emb) or {}
            if entry.get("fad") is not None:
                out[f"eval/{name}/{emb}/fad"] = entry["fad"]
                out[f"eval/{name}/{emb}/n"] = entry["n"]
            if entry.get("fad_inf"):
                out[f"eval/{name}/{emb}/fad_inf"] = entry["fad_inf"]["a"]
                out[f"eval/{name}/{emb}/fad_inf_r2"] = entry["fad_inf"]["r2"]
            if entry.get("kad") is not None:
                out[f"eval/{name}/{emb}/kad"] = entry["kad"]
        for key in SET_SCORES:
            if block.get(key) is not None:
                out[f"eval/{name}/{key}"] = block[key]
    ref = metrics.get("reference", {})
    for emb in embeddings:
        rec = (ref.get(emb) or {}).get("reconstruction") or {}
        if rec.get("fad") is not None:
            out[f"eval/reference/{emb}/reconstruction_fad"] = rec["fad"]
        if rec.get("kad") is not None:
            out[f"eval/reference/{emb}/reconstruction_kad"] = rec["kad"]
    if ref.get("clap_score") is not None:
        out["eval/reference/clap_score"] = ref["clap_score"]
    for metric, delta in (metrics.get("delta") or {}).items():  # fine-tuned − base, with its 95% interval
        out[f"eval/delta/{metric}"] = delta.get("value")
        lo, hi = delta.get("ci95") or (None, None)
        out[f"eval/delta/{metric}_ci95_lo"], out[f"eval/delta/{metric}_ci95_hi"] = lo, hi
    return {k: float(v) for k, v in out.items() if v is not None}


def metrics_rows(
    metrics: dict[str, Any], set_names: list[str], embeddings: list[str]
) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows of the metrics table: FAD, FAD∞ and KAD per embedding, the CLAP score (and chroma
    cosine), per set, with the reference floor (ceiling for the CLAP score) and, for a paired comparison, the
    difference, its 95% interval, the number of prompts and the verdict."""
    from tunekit.eval.report import metric_label

    ref = metrics.get("reference", {})
    deltas = metrics.get("delta") or {}
    columns = ["metric", *set_names, "reference floor / ceiling"]
    if deltas:
        of = (metrics.get("delta_settings") or {}).get("of", "difference")
        columns += [of, "95% lower", "95% upper", "prompts", "verdict"]
    rows: list[list[Any]] = []

    def row(label: str, values: list[Any], ref_value: Any, key: str | None) -> None:
        if all(v is None for v in values):
            return
        cells = [label, *values, ref_value]
        if deltas:
            d = (deltas.get(key) or {}) if key else {}
            lo, hi = d.get("ci95") or (None, None)
            verdict = d.get("verdict") or (f"no verdict: {d['note']}" if d.get("note") else None)
            cells += [d.get("value"), lo, hi, d.get("n"), verdict]
        rows.append(cells)

    for emb in embeddings:
        per = [metrics.get(n, {}).get(emb) or {} for n in set_names]
        floor = (ref.get(emb) or {}).get("reconstruction") or {}
        row(f"FAD {emb}", [p.get("fad") for p in per], floor.get("fad"), f"fad_{emb}")
        row(f"FAD∞ {emb}", [(p.get("fad_inf") or {}).get("a") for p in per], (floor.get("fad_inf") or {}).get("a"),
            None)
        row(f"KAD {emb}", [p.get("kad") for p in per], floor.get("kad"), f"kad_{emb}")
    for key in SET_SCORES:
        row(metric_label(key), [metrics.get(n, {}).get(key) for n in set_names], ref.get(key), key)
    return columns, rows


def _image(wandb: Any, png: bytes, caption: str) -> Any:
    """A wandb.Image of PNG bytes (decoded with Pillow, as wandb needs)."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(png)) as img:
        return wandb.Image(img.convert("RGB"), caption=caption)


@contextlib.contextmanager
def _data_dir(path: Path | None) -> Iterator[None]:
    """Point wandb's data dir (where artifact files are staged until synced) at `path` while logging."""
    if path is None:
        yield
        return
    old = os.environ.get("WANDB_DATA_DIR")
    os.environ["WANDB_DATA_DIR"] = str(path)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("WANDB_DATA_DIR", None)
        else:
            os.environ["WANDB_DATA_DIR"] = old


def log_eval(
    metrics: dict[str, Any],
    sets: list[SetScores],
    *,
    project: str,
    run_name: str,
    out_dir: Path,
    embeddings: list[str] | None = None,
    entity: str | None = None,
    mode: str = "auto",
    group: str | None = None,
    max_rows: int = 32,
) -> str:
    """Log one evaluation as a W&B run (job_type=eval) and its W&B Report; returns the run's local directory.

    Where the Report went (its URL, or its spec file and why it was not saved) is recorded under `wandb` in
    metrics.json (when `out_dir` holds one) and in `metrics`.
    """
    import wandb

    from tunekit.eval.wandb_report import RunKeys, RunPath, record_in_metrics, report_for_run

    embeddings = embeddings or [k for k in metrics.get("embeddings", {}) if any(k in metrics.get(s.name, {}) for s in sets)]
    names = [s.name for s in sets]
    out_dir.mkdir(parents=True, exist_ok=True)
    mode = wandb_mode(mode)
    with _data_dir(out_dir / "wandb" / "data" if mode == "offline" else None):
        run = wandb.init(
            project=project,
            entity=entity,
            group=group,
            name=run_name,
            job_type="eval",
            dir=str(out_dir),
            mode=mode,
            config={"models": metrics.get("models"), "seed": metrics.get("seed"), "mode": metrics.get("mode")},
            settings=wandb.Settings(quiet=True),
        )
        try:
            flat = flat_metrics(metrics, names, embeddings)
            run.log(flat)
            for k, v in flat.items():
                run.summary[k] = v
            columns, rows = metrics_rows(metrics, names, embeddings)
            run.log({METRICS_TABLE_KEY: wandb.Table(columns=columns, data=rows)})
            run.log(_clip_media(wandb, sets, max_rows))
            run.log(_charts(wandb, metrics, names, embeddings))
            path = RunPath(entity=run.entity or entity or "", project=run.project, id=run.id, name=run_name)
            keys = RunKeys(scalars=list(flat), metrics_table=METRICS_TABLE_KEY, clips_table=CLIPS_KEY)
            report = report_for_run(metrics, path, keys, set_names=names, embeddings=embeddings, out_dir=out_dir,
                                    online=mode == "online")
            if report.url:
                run.summary[REPORT_URL_KEY] = report.url
            run_dir = Path(run.dir).parent
        finally:
            run.finish()
    entry = {"run": str(path), "run_dir": str(run_dir), **report.to_dict()}
    metrics["wandb"] = entry
    record_in_metrics(out_dir, entry)
    return str(run_dir)


def _clip_media(wandb: Any, sets: list[SetScores], max_rows: int) -> dict[str, Any]:
    """The clips table (prompt, then audio and spectrogram per set) and the same media as plain keys."""
    from tunekit.eval.images import spectrogram_png

    columns = ["id", "prompt"]
    for s in sets:
        columns += [f"{s.name} audio", f"{s.name} spectrogram"]
    table = wandb.Table(columns=columns)
    media: dict[str, Any] = {}
    ids = sorted({i.id for s in sets for i in s.audio_set.items})[:max_rows]
    for cid in ids:
        prompt = next((i.prompt for s in sets for i in s.audio_set.items if i.id == cid and i.prompt), "")
        row: list[Any] = [cid, prompt]
        for s in sets:
            item = next((i for i in s.audio_set.items if i.id == cid), None)
            if item is None:
                row += [None, None]
                continue
            audio, rate = item.load()
            mono = to_mono(np.asarray(audio, dtype=np.float32))
            png = spectrogram_png(audio, rate)
            caption = prompt or cid
            row += [wandb.Audio(mono, sample_rate=rate, caption=caption), _image(wandb, png, caption)]
            media[f"eval/audio/{s.name}/{cid}"] = wandb.Audio(mono, sample_rate=rate, caption=caption)
            media[f"eval/spectrogram/{s.name}/{cid}"] = _image(wandb, png, caption)
        table.add_data(*row)
    return {CLIPS_KEY: table, **media}


def _charts(wandb: Any, metrics: dict[str, Any], names: list[str], embeddings: list[str]) -> dict[str, Any]:
    """Bar charts of FAD per embedding and of the CLAP score, one bar per set."""
    charts: dict[str, Any] = {}
    for emb in embeddings:
        data = [[name, (metrics.get(name, {}).get(emb) or {}).get("fad")] for name in names]
        data = [d for d in data if d[1] is not None]
        if data:
            t = wandb.Table(data=data, columns=["set", "fad"])
            charts[f"eval/fad_{emb}"] = wandb.plot.bar(t, "set", "fad", title=f"FAD {emb} (lower is better)")
    clap = [[name, metrics.get(name, {}).get("clap_score")] for name in [*names, "reference"]]
    clap = [c for c in clap if c[1] is not None]
    if clap:
        t = wandb.Table(data=clap, columns=["set", "clap_score"])
        charts["eval/clap_score"] = wandb.plot.bar(t, "set", "clap_score", title="CLAP score (higher is better)")
    return charts
