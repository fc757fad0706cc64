"""Log an evaluation to Weights & Biases: the metrics, a table of prompts with audio and spectrograms per
set, and bar charts. Offline (files under `<out>/wandb/`, sync later with `wandb sync`) when no API
key is configured. wandb is imported only here.
"""

from __future__ import annotations

import importlib.util
import netrc
import os
from pathlib import Path
from typing import Any

import numpy as np

from tunekit.eval.score import SetScores


def has_api_key() -> bool:
    """True when W&B credentials exist (WANDB_API_KEY or an api.wandb.ai entry in ~/.netrc)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_mode(mode: str = "auto") -> str:
    """`online`/`offline` as given; `auto`: WANDB_MODE when set, else online with credentials, offline without."""
    if mode in ("online", "offline"):
        return mode
    return os.environ.get("WANDB_MODE") or ("online" if has_api_key() else "offline")


def flat_metrics(metrics: dict[str, Any], set_names: list[str], embeddings: list[str]) -> dict[str, float]:
    """`<set>/<embedding>/fad`, `…/fad_inf`, `…/n`, `<set>/clap_score` and the reference floor/ceiling."""
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
        if block.get("clap_score") is not None:
            out[f"eval/{name}/clap_score"] = block["clap_score"]
    ref = metrics.get("reference", {})
    for emb in embeddings:
        rec = (ref.get(emb) or {}).get("reconstruction") or {}
        if rec.get("fad") is not None:
            out[f"eval/reference/{emb}/reconstruction_fad"] = rec["fad"]
    if ref.get("clap_score") is not None:
        out["eval/reference/clap_score"] = ref["clap_score"]
    return {k: float(v) for k, v in out.items() if v is not None}


def _image(wandb: Any, png: bytes) -> Any:
    """wandb.Image when Pillow is installed (wandb needs it for images), else the PNG inline in wandb.Html."""
    if importlib.util.find_spec("PIL") is not None:
        import io

        from PIL import Image

        return wandb.Image(Image.open(io.BytesIO(png)))
    from tunekit.eval.report import data_uri

    return wandb.Html(f'<img style="width:100%" src="{data_uri("image/png", png)}">', inject=False)


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
    """Log one evaluation as a W&B run (job_type=eval); returns the run's local directory."""
    import wandb

    from tunekit.eval.images import spectrogram_png

    embeddings = embeddings or [k for k in metrics.get("embeddings", {}) if any(k in metrics.get(s.name, {}) for s in sets)]
    names = [s.name for s in sets]
    out_dir.mkdir(parents=True, exist_ok=True)
    run = wandb.init(
        project=project,
        entity=entity,
        group=group,
        name=run_name,
        job_type="eval",
        dir=str(out_dir),
        mode=wandb_mode(mode),
        config={"models": metrics.get("models"), "seed": metrics.get("seed"), "mode": metrics.get("mode")},
    )
    try:
        flat = flat_metrics(metrics, names, embeddings)
        run.log(flat)
        for k, v in flat.items():
            run.summary[k] = v
        columns = ["id", "prompt"]
        for name in names:
            columns += [f"{name} audio", f"{name} spectrogram"]
        table = wandb.Table(columns=columns)
        ids = sorted({i.id for s in sets for i in s.audio_set.items})[:max_rows]
        for cid in ids:
            row: list[Any] = [cid, next((i.prompt for s in sets for i in s.audio_set.items if i.id == cid and i.prompt), "")]
            for s in sets:
                item = next((i for i in s.audio_set.items if i.id == cid), None)
                if item is None:
                    row += [None, None]
                    continue
                audio, rate = item.load()
                mono = np.asarray(audio, dtype=np.float32).mean(axis=0)
                row += [wandb.Audio(mono, sample_rate=rate, caption=cid), _image(wandb, spectrogram_png(audio, rate))]
            table.add_data(*row)
        charts: dict[str, Any] = {"eval/clips": table}
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
        run.log(charts)
        return str(Path(run.dir).parent)
    finally:
        run.finish()
