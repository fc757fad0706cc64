"""report.html: one self-contained page (inline CSS, SVG charts, base64 PNG spectrograms and OGG audio).

It opens from disk with no network: no external scripts, fonts or images. A small inline script marks
`<body data-media-ready="1">` once every image has decoded and every audio element has loaded its
metadata, with the counts in `data-images-ok` / `data-audio-ok` (used by the headless-browser test).
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from tunekit.eval.images import encode_audio_ogg, spectrogram_png
from tunekit.eval.score import SetScores
from tunekit.eval.sets import AudioItem, AudioSet

MAX_CLIP_SECONDS = 30.0
_COLORS = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#9d755d", "#bab0ac")
LABELS = {"base": "base", "finetuned": "fine-tuned", "generated": "generated", "reference": "reference"}

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1180px;color:#222;padding:0 16px}
h1{font-size:1.6em;margin-bottom:4px}h2{margin-top:36px;border-bottom:1px solid #ddd;padding-bottom:4px}
.meta{color:#666;font-size:.9em}table{border-collapse:collapse;margin:8px 0;font-size:.92em}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:right;vertical-align:top}th{background:#f5f5f5}
td.l,th.l{text-align:left}.better{color:#1a7f37;font-weight:600}.worse{color:#c62828;font-weight:600}
.unclear{color:#555}.verdicts{list-style:none;padding:0;margin:12px 0}.verdicts li{margin:3px 0}
.warn{background:#fff4e5;border-left:4px solid #f0a020;padding:6px 10px;margin:6px 0;font-size:.9em}
.clips{display:grid;gap:12px}.clip{border:1px solid #e3e3e3;border-radius:6px;padding:8px}
.clip .prompt{font-style:italic;margin-bottom:6px}.pair{display:grid;gap:10px}
.pair>div{min-width:0}.pair img{width:100%;height:96px;image-rendering:pixelated;display:block}
audio{width:100%;height:32px}.small{font-size:.82em;color:#555}.charts{display:flex;flex-wrap:wrap;gap:16px}
code{background:#f3f3f3;padding:1px 4px;border-radius:3px}
"""

_SCRIPT = """
(function(){
  function check(tries){
    var imgs=Array.prototype.slice.call(document.images);
    var auds=Array.prototype.slice.call(document.querySelectorAll('audio'));
    var imgOk=imgs.filter(function(i){return i.complete&&i.naturalWidth>0;}).length;
    var imgBad=imgs.filter(function(i){return i.complete&&i.naturalWidth===0;}).length;
    var audOk=auds.filter(function(a){return a.readyState>=1&&isFinite(a.duration)&&a.duration>0;}).length;
    var audBad=auds.filter(function(a){return !!a.error;}).length;
    var b=document.body;
    b.setAttribute('data-images-ok',imgOk);b.setAttribute('data-images-bad',imgBad);
    b.setAttribute('data-audio-ok',audOk);b.setAttribute('data-audio-bad',audBad);
    if((imgOk+imgBad===imgs.length&&audOk+audBad===auds.length)||tries>200){
      b.setAttribute('data-media-ready',(imgBad===0&&audBad===0&&tries<=200)?'1':'0');
    }else{setTimeout(function(){check(tries+1);},50);}
  }
  window.addEventListener('load',function(){check(0);});
})();
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.{digits}g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.3e}"
    return str(v)


def data_uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def clip_media(item: AudioItem) -> tuple[str, str]:
    """(audio data URI, spectrogram PNG data URI) of a clip, at most 30 s of it."""
    audio, rate = item.load()
    audio = audio[:, : int(MAX_CLIP_SECONDS * rate)]
    return data_uri("audio/ogg", encode_audio_ogg(audio, rate)), data_uri("image/png", spectrogram_png(audio, rate))


# ----------------------------------------------------------------------------- SVG charts


def line_chart(series: dict[str, Sequence[tuple[float, float]]], title: str, *, x_label: str = "step",
               width: int = 520, height: int = 220, points: bool = False,
               lines: dict[str, Sequence[tuple[float, float]]] | None = None) -> str:
    """An inline SVG chart: one polyline (or dots with `points`) per series, plus optional fitted `lines`."""
    lines = lines or {}
    everything = [p for s in (*series.values(), *lines.values()) for p in s if all(map(math.isfinite, p))]
    if not everything:
        return ""
    xs, ys = [p[0] for p in everything], [p[1] for p in everything]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    x1 = x1 if x1 > x0 else x0 + 1
    pad_y = (y1 - y0) * 0.05 or abs(y0) * 0.05 or 1.0
    y0, y1 = y0 - pad_y, y1 + pad_y
    n_legend = len(series) + len(lines)
    ml, mr, mt, mb = 56, 12, 34 + 12 * ((n_legend - 1) // 4), 34

    def sx(x: float) -> float:
        return ml + (x - x0) / (x1 - x0) * (width - ml - mr)

    def sy(y: float) -> float:
        return height - mb - (y - y0) / (y1 - y0) * (height - mt - mb)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" class="chart">',
             f"<title>{_e(title)}</title>",
             f'<text x="{ml}" y="14" font-size="13" font-weight="600">{_e(title)}</text>',
             f'<line x1="{ml}" y1="{height - mb}" x2="{width - mr}" y2="{height - mb}" stroke="#999"/>',
             f'<line x1="{ml}" y1="{mt}" x2="{ml}" y2="{height - mb}" stroke="#999"/>']
    for frac in (0.0, 0.5, 1.0):
        yv = y0 + frac * (y1 - y0)
        xv = x0 + frac * (x1 - x0)
        parts.append(f'<text x="{ml - 4}" y="{sy(yv) + 4:.1f}" font-size="10" text-anchor="end">{_e(_fmt(yv, 3))}</text>')
        parts.append(f'<text x="{sx(xv):.1f}" y="{height - mb + 14}" font-size="10" text-anchor="middle">{_e(_fmt(xv, 3))}</text>')
    parts.append(f'<text x="{(ml + width - mr) / 2}" y="{height - 4}" font-size="10" text-anchor="middle">{_e(x_label)}</text>')
    for i, (label, pts) in enumerate([*series.items(), *lines.items()]):
        color = _COLORS[i % len(_COLORS)]
        good = [p for p in pts if all(map(math.isfinite, p))]
        if not good:
            continue
        if points and label in series:
            parts += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{color}"/>' for x, y in good]
        else:
            dash = ' stroke-dasharray="5,3"' if label in lines else ""
            coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in good)
            parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.6"{dash} points="{coords}"/>')
        legend_x = ml + 8 + 110 * (i % 4)
        parts.append(f'<text x="{legend_x}" y="{mt - 2 + 12 * (i // 4)}" font-size="10" fill="{color}">■ {_e(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(values: dict[str, float | None], title: str, *, width: int = 260, height: int = 160) -> str:
    """An inline SVG bar chart of a few labelled values."""
    items = [(k, v) for k, v in values.items() if v is not None and math.isfinite(v)]
    if not items:
        return ""
    top = max(max(v for _, v in items), 0.0)
    bottom = min(min(v for _, v in items), 0.0)
    span = (top - bottom) or 1.0
    bw = (width - 20) / len(items)
    base_y = 22 + (top / span) * (height - 52)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" class="chart">',
             f'<text x="4" y="14" font-size="12" font-weight="600">{_e(title)}</text>']
    for i, (label, v) in enumerate(items):
        h = abs(v) / span * (height - 52)
        y = base_y - h if v >= 0 else base_y
        x = 10 + i * bw + bw * 0.15
        parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bw * 0.7:.1f}" height="{max(h, 0.5):.1f}" fill="{_COLORS[i % len(_COLORS)]}"/>')
        parts.append(f'<text x="{x + bw * 0.35:.1f}" y="{height - 18}" font-size="10" text-anchor="middle">{_e(label)}</text>')
        parts.append(f'<text x="{x + bw * 0.35:.1f}" y="{height - 5}" font-size="10" text-anchor="middle">{_e(_fmt(v, 3))}</text>')
    parts.append("</svg>")
    return "".join(parts)


def training_curves(records: list[dict[str, Any]]) -> list[str]:
    """SVG charts of a run's metrics.jsonl: every loss-like key on one chart, other numeric keys alone."""
    series: dict[str, list[tuple[float, float]]] = {}
    for i, rec in enumerate(records):
        x = rec.get("step", rec.get("global_step", i))
        if not isinstance(x, (int, float)):
            continue
        for k, v in rec.items():
            if k in ("step", "global_step", "epoch", "time", "timestamp", "wall_s") or isinstance(v, bool):
                continue
            if isinstance(v, (int, float)) and math.isfinite(v):
                series.setdefault(k, []).append((float(x), float(v)))
    series = {k: v for k, v in series.items() if len(v) >= 2}
    losses = {k: v for k, v in series.items() if "loss" in k}
    charts = [line_chart(losses, "loss")] if losses else []
    charts += [line_chart({k: v}, k) for k, v in sorted(series.items()) if k not in losses]
    return [c for c in charts if c]


# ----------------------------------------------------------------------------- tables


MARKS = {"better": "▲ better", "worse": "▼ worse", "no clear difference": "= no clear difference"}


def metric_label(key: str) -> str:
    """'fad_clap' → 'FAD clap', 'kad_vggish' → 'KAD vggish', 'clap_score' → 'CLAP score'."""
    if key == "clap_score":
        return "CLAP score"
    kind, _, emb = key.partition("_")
    return f"{kind.upper()} {emb}"


def _interval(delta: dict[str, Any]) -> str:
    ci = delta.get("ci95")
    return f"[{ci[0]:+.3g}, {ci[1]:+.3g}]" if ci else ""


def change_cell(values: list[float | None], delta: dict[str, Any] | None) -> str:
    """The fine-tuned − base cell: ▲/▼ only when the 95% interval excludes 0, the bare difference otherwise."""
    if delta is not None:
        verdict = delta.get("verdict")
        numbers = f"({delta['value']:+.3g} {_interval(delta)})" if delta.get("value") is not None else ""
        if verdict in MARKS:
            css = {"no clear difference": "unclear"}.get(verdict, verdict)
            return f'<td class="{css}">{_e(MARKS[verdict])} {_e(numbers)}</td>'
        return (f'<td class="unclear">{_e(numbers)} '
                f'<span class="small" title="{_e(delta.get("note") or "")}">no verdict</span></td>')
    if values[0] is None or values[1] is None:
        return "<td>–</td>"
    return f'<td class="unclear">({values[1] - values[0]:+.3g}) <span class="small">no interval</span></td>'


def metrics_table(metrics: dict[str, Any], set_names: list[str], embeddings: list[str]) -> str:
    """Rows: FAD, FAD∞, KAD per embedding and the CLAP score; columns: the sets, then the reference floor/ceiling.

    With two sets (base, fine-tuned) a change column gives the difference; it is marked better/worse only where
    the paired comparison (`delta` in metrics.json) says its 95% interval excludes 0.
    """
    ref = metrics.get("reference", {})
    deltas = metrics.get("delta") or {}
    compare = len(set_names) == 2
    head = "".join(f"<th>{_e(LABELS.get(n, n))}</th>" for n in set_names)
    head += "<th>change (95% interval)</th>" if compare else ""
    head += "<th>reference floor / ceiling</th>"
    rows = [f'<table class="metrics"><tr><th class="l">metric</th>{head}</tr>']

    def row(label: str, values: list[float | None], ref_value: float | None, key: str | None, note: str = "") -> None:
        cells = "".join(f"<td>{_e(_fmt(v))}</td>" for v in values)
        if compare:
            cells += change_cell(values, deltas.get(key) if key else None)
        cells += f"<td>{_e(_fmt(ref_value))}</td>"
        rows.append(f'<tr data-metric="{_e(label)}"><td class="l">{_e(label)} <span class="small">{_e(note)}</span></td>{cells}</tr>')

    for emb in embeddings:
        per = [metrics.get(n, {}).get(emb) or {} for n in set_names]
        floor = (ref.get(emb) or {}).get("reconstruction") or {}
        ns = ", ".join(f"N={p.get('n')}" for p in per if p)
        row(f"FAD {emb}", [p.get("fad") for p in per], floor.get("fad"), f"fad_{emb}", f"lower is better; {ns}")
        row(f"FAD∞ {emb}", [(p.get("fad_inf") or {}).get("a") for p in per], (floor.get("fad_inf") or {}).get("a"), None,
            "intercept of FAD(n) = a + b/n")
        if any("kad" in p for p in per):
            kn = ", ".join(f"N={p.get('kad_n')}" for p in per if p)
            row(f"KAD {emb}", [p.get("kad") for p in per], floor.get("kad"), f"kad_{emb}",
                f"lower is better; MMD² × 100; {kn}")
    if any(metrics.get(n, {}).get("clap_score") is not None for n in set_names):
        row("CLAP score", [metrics.get(n, {}).get("clap_score") for n in set_names], ref.get("clap_score"),
            "clap_score", "higher is better; reference: its own captions")
    rows.append("</table>")
    return "".join(rows)


def verdict_lines(metrics: dict[str, Any]) -> str:
    """One line per metric of the paired comparison: its verdict, fine-tuned − base and the 95% interval."""
    deltas = metrics.get("delta") or {}
    if not deltas:
        return ""
    settings = metrics.get("delta_settings") or {}
    lines = []
    for key, d in deltas.items():
        verdict = d.get("verdict")
        what = {"better": "fine-tuned is better than base", "worse": "fine-tuned is worse than base",
                "no clear difference": "no clear difference between fine-tuned and base"}.get(verdict)
        if what is None:
            what = f"no verdict ({d.get('note') or 'no interval'})"
        css = {"no clear difference": "unclear", None: "unclear"}.get(verdict, verdict)
        numbers = f"fine-tuned − base {d['value']:+.3g}" if d.get("value") is not None else ""
        if d.get("ci95"):
            numbers += f", 95% interval {_interval(d)} over {d.get('n')} prompts"
        lines.append(f'<li data-delta="{_e(key)}" class="{_e(css)}"><b>{_e(metric_label(key))}</b>: {_e(what)}'
                     f' <span class="small">{_e(numbers)}</span></li>')
    how = (f"Paired over the same prompts and seeds: {settings.get('resamples')} bootstrap resamples of the prompts, "
           "percentile interval; a difference counts only when its interval excludes 0. Lower FAD and KAD are better, "
           "a higher CLAP score is better.")
    return f'<ul class="verdicts">{"".join(lines)}</ul><p class="small">{_e(how)}</p>'


def lengths_line(metrics: dict[str, Any]) -> str:
    """How long the generated clips and the reference windows are, and which side was cropped."""
    generation = metrics.get("generation") or {}
    crop = (metrics.get("reference") or {}).get("crop") or {}
    if not generation.get("duration"):
        return ""
    text = f"Generated clips: {generation['duration']:g} s ({generation.get('duration_source', '')})."
    if crop:
        text += (f" Reference windows longer than that are cropped to their first {crop['seconds']:g} s "
                 f"({crop.get('cropped', 0)} cropped), so both sides have equal length.")
    return f'<p class="small">{_e(text)}</p>'


def fad_inf_table(metrics: dict[str, Any], set_names: list[str], embeddings: list[str]) -> str:
    """The FAD∞ fits (a, b, R², subset sizes) with a chart of FAD against 1/n per embedding."""
    rows = ['<table><tr><th class="l">set</th><th class="l">embedding</th><th>FAD (N)</th><th>a = FAD∞</th>'
            '<th>b</th><th>R²</th><th class="l">subset sizes (without replacement)</th></tr>']
    charts = []
    for emb in embeddings:
        series, fits = {}, {}
        for n in set_names:
            m = metrics.get(n, {}).get(emb) or {}
            fit = m.get("fad_inf")
            if not fit:
                continue
            rows.append(f'<tr><td class="l">{_e(LABELS.get(n, n))}</td><td class="l">{_e(emb)}</td>'
                        f"<td>{_e(_fmt(m.get('fad')))} ({m.get('n')})</td><td>{_e(_fmt(fit['a']))}</td>"
                        f"<td>{_e(_fmt(fit['b']))}</td><td>{_e(_fmt(fit['r2'], 3))}</td>"
                        f'<td class="l small">{_e(", ".join(map(str, fit["sizes"])))}</td></tr>')
            series[LABELS.get(n, n)] = [(1.0 / s, v) for s, v in zip(fit["sizes"], fit["values"], strict=True)]
            fits[f"{LABELS.get(n, n)} fit"] = [(0.0, fit["a"]), (1.0 / min(fit["sizes"]), fit["a"] + fit["b"] / min(fit["sizes"]))]
        if series:
            charts.append(line_chart(series, f"FAD vs 1/n: {emb}", x_label="1/n", points=True, lines=fits, width=380))
    rows.append("</table>")
    return "".join(rows) + f'<div class="charts">{"".join(charts)}</div>'


# ----------------------------------------------------------------------------- page


def _clip_cell(scores: SetScores, cid: str, embeddings: list[str]) -> str:
    item = next((i for i in scores.audio_set.items if i.id == cid), None)
    if item is None:
        return '<div class="small">(missing)</div>'
    audio_uri, png_uri = clip_media(item)
    dist = " · ".join(f"{e} {_fmt(scores.distances.get(e, {}).get(cid), 3)}" for e in embeddings if e in scores.distances)
    clap = scores.clap.per_item.get(cid) if scores.clap else None
    extra = f" · CLAP {_fmt(clap, 3)}" if clap is not None else ""
    return (f'<div><div class="small"><b>{_e(LABELS.get(scores.name, scores.name))}</b> · {_e(cid)}</div>'
            f'<audio controls preload="metadata" src="{audio_uri}"></audio>'
            f'<img alt="spectrogram of {_e(cid)}" src="{png_uri}">'
            + (f'<div class="small">distance to reference: {_e(dist)}{_e(extra)}</div>' if dist or extra else "")
            + "</div>")


def clips_section(sets: list[SetScores], ids: list[str], embeddings: list[str]) -> str:
    """One card per clip id: its prompt, then each set's clip (player + spectrogram) side by side."""
    cards = []
    for cid in ids:
        prompt = next((i.prompt for s in sets for i in s.audio_set.items if i.id == cid and i.prompt), "")
        cells = "".join(_clip_cell(s, cid, embeddings) for s in sets)
        cards.append(f'<div class="clip" data-clip="{_e(cid)}"><div class="prompt">{_e(prompt) or "(no prompt)"}</div>'
                     f'<div class="pair" style="grid-template-columns:repeat({len(sets)},1fr)">{cells}</div></div>')
    return f'<div class="clips">{"".join(cards)}</div>'


def outliers_section(sets: list[SetScores], embeddings: list[str], with_audio: int = 3) -> str:
    """Per set and embedding, the clips furthest from the reference; the top few with players."""
    out = []
    for s in sets:
        prompts = s.audio_set.prompts()
        for emb in embeddings:
            entries = (s.metrics.get(emb) or {}).get("outliers") or []
            if not entries:
                continue
            rows = "".join(f'<tr class="outlier"><td class="l">{_e(o["id"])}</td><td>{_e(_fmt(o["distance"]))}</td>'
                           f'<td class="l">{_e(prompts.get(o["id"], ""))}</td></tr>' for o in entries)
            out.append(f"<h3>{_e(LABELS.get(s.name, s.name))} · {_e(emb)}</h3><table><tr><th class='l'>clip</th>"
                       f"<th>Fréchet distance of its frames</th><th class='l'>prompt</th></tr>{rows}</table>")
        first = next((e for e in embeddings if (s.metrics.get(e) or {}).get("outliers")), None)
        if first and with_audio:
            ids = [o["id"] for o in s.metrics[first]["outliers"][:with_audio]]
            out.append(clips_section([s], ids, embeddings))
    return "".join(out)


def render_report(
    metrics: dict[str, Any],
    sets: list[SetScores],
    *,
    title: str,
    embeddings: list[str],
    n_clips: int,
    reference: AudioSet | None = None,
    training: list[dict[str, Any]] | None = None,
    n_reference_clips: int = 3,
) -> str:
    """The whole page as a string."""
    names = [s.name for s in sets]
    ids = sorted({i.id for s in sets for i in s.audio_set.items})[:n_clips]
    warnings = list(metrics.get("warnings", []))
    for n in [*names, "reference"]:
        for emb in embeddings:
            entry = metrics.get(n, {}).get(emb) or {}
            warnings += entry.get("warnings", []) + (entry.get("reconstruction") or {}).get("warnings", [])
    warn_html = "".join(f'<div class="warn">{_e(w)}</div>' for w in dict.fromkeys(warnings))
    policies = "".join(
        f"<tr><td class='l'>{_e(k)}</td><td class='l'>{_e(v.get('model_id'))}</td><td class='l small'>{_e(v.get('policy'))}</td></tr>"
        for k, v in metrics.get("embeddings", {}).items()
    )
    bars = "".join(
        bar_chart({LABELS.get(n, n): (metrics.get(n, {}).get(e) or {}).get("fad") for n in names}
                  | {"floor": ((metrics.get("reference", {}).get(e) or {}).get("reconstruction") or {}).get("fad")},
                  f"FAD {e}")
        for e in embeddings
    )
    if any(metrics.get(n, {}).get("clap_score") is not None for n in names):
        bars += bar_chart({LABELS.get(n, n): metrics.get(n, {}).get("clap_score") for n in names}
                          | {"reference": metrics.get("reference", {}).get("clap_score")}, "CLAP score")
    body = [f"<h1>{_e(title)}</h1>",
            f'<div class="meta">{_e(metrics.get("created", ""))} · tunekit {_e(metrics.get("versions", {}).get("tunekit", ""))}'
            f' · mode {_e(metrics.get("mode", ""))} · reference: {_e(metrics.get("reference", {}).get("source", ""))}'
            f' ({_e(metrics.get("reference", {}).get("n_clips", ""))} clips)</div>',
            verdict_lines(metrics), lengths_line(metrics),
            "<h2>Metrics</h2>", metrics_table(metrics, names, embeddings), f'<div class="charts">{bars}</div>', warn_html]
    if training:
        curves = training_curves(training)
        if curves:
            body += ["<h2>Training curves</h2>", f'<div class="charts">{"".join(curves)}</div>']
    body += ["<h2>Clips</h2>", clips_section(sets, ids, embeddings)]
    body += ["<h2>Outliers</h2>", '<p class="small">Clips whose own frames are furthest (Fréchet distance) from the '
             "reference distribution.</p>", outliers_section(sets, embeddings)]
    if reference is not None and n_reference_clips:
        ref_scores = SetScores(name="reference", audio_set=reference, metrics={})
        body += ["<h2>Reference examples</h2>",
                 clips_section([ref_scores], [i.id for i in reference.items[:n_reference_clips]], [])]
    body += ["<h2>FAD∞ fits</h2>", fad_inf_table(metrics, names, embeddings),
             "<h2>Embeddings</h2>", f"<table><tr><th class='l'>embedding</th><th class='l'>model</th>"
             f"<th class='l'>frames / windows</th></tr>{policies}</table>"]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>" + "".join(body)
            + f"<script>{_SCRIPT}</script></body></html>\n")


def finite_or_none(value: Any) -> Any:
    """JSON-safe numbers: NaN/inf become None (recursively)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, np.floating):
        return finite_or_none(float(value))
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value
