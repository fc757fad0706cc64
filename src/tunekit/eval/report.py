"""report.html: one self-contained page (inline CSS, SVG charts, base64 PNG spectrograms and OGG audio).

Each prompt's card plays the held-out reference window beside the base and fine-tuned clips (run mode); every
spectrogram has time and frequency axes; training curves step in whole steps, and a series that never changes
is one line of text rather than a flat chart; outliers are listed only for sets large enough to have any
(`tunekit.eval.outliers`).

It opens from disk with no network: no external scripts, fonts or images. A small inline script marks
`<body data-media-ready="1">` once every image has decoded and every audio element has loaded its
metadata, with the counts in `data-images-ok` / `data-audio-ok` (used by the headless-browser test).
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tunekit.eval.images import SpectrogramAxes, encode_audio_ogg, nice_ticks, spectrogram_axes, spectrogram_png
from tunekit.eval.outliers import MIN_CLIPS, Z
from tunekit.eval.score import SetScores
from tunekit.eval.sets import AudioItem, AudioSet

MAX_CLIP_SECONDS = 30.0
_COLORS = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#9d755d", "#bab0ac")
LABELS = {"base": "base", "finetuned": "fine-tuned", "generated": "generated", "reference": "reference"}
SPEC_HEIGHT = 96  # spectrogram image rows (mel bands) and CSS height in pixels

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
.pair>div{min-width:0}.spec{display:grid;grid-template-columns:36px minmax(0,1fr);margin:2px 0 0}
.spec img{width:100%;height:96px;image-rendering:pixelated;display:block}.spec svg{display:block;overflow:visible}
.spec .tax{grid-column:2}.constants{list-style:none;padding:0;margin:6px 0;font-size:.9em}
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


def clip_media(item: AudioItem) -> tuple[str, str, SpectrogramAxes]:
    """(audio data URI, spectrogram PNG data URI, the spectrogram's axes) of a clip, at most 30 s of it."""
    audio, rate = item.load()
    audio = audio[:, : int(MAX_CLIP_SECONDS * rate)]
    png = spectrogram_png(audio, rate, height=SPEC_HEIGHT)
    axes = spectrogram_axes(audio.shape[-1], rate, height=SPEC_HEIGHT)
    return data_uri("audio/ogg", encode_audio_ogg(audio, rate)), data_uri("image/png", png), axes


def spectrogram_figure(png_uri: str, axes: SpectrogramAxes, alt: str) -> str:
    """The spectrogram image with a frequency axis on its left and a time axis below, both labelled.

    Tick positions are percentages of the image's size, so the axes stay aligned however wide it is drawn.
    """
    h = SPEC_HEIGHT
    left = [f'<svg class="fax" width="36" height="{h}" role="img" aria-label="{_e(axes.frequency_label)}">',
            f'<text transform="rotate(-90)" x="{-h / 2}" y="8" font-size="9" text-anchor="middle">'
            f"{_e(axes.frequency_label)}</text>"]
    for y, label in axes.frequency:
        pct = f"{100 * y:.2f}%"
        left.append(f'<line x1="32" x2="36" y1="{pct}" y2="{pct}" stroke="#888"/>'
                    f'<text class="tick" x="30" y="{pct}" dy="3" font-size="9" text-anchor="end">{_e(label)}</text>')
    left.append("</svg>")
    bottom = [f'<svg class="tax" width="100%" height="24" role="img" aria-label="{_e(axes.time_label)}">']
    for x, label in axes.time:
        pct = f"{100 * x:.2f}%"
        bottom.append(f'<line x1="{pct}" x2="{pct}" y1="0" y2="4" stroke="#888"/>'
                      f'<text class="tick" x="{pct}" y="13" font-size="9" text-anchor="middle">{_e(label)}</text>')
    bottom.append(f'<text x="100%" y="23" font-size="9" text-anchor="end">{_e(axes.time_label)}</text></svg>')
    return (f'<figure class="spec">{"".join(left)}<img alt="{_e(alt)}" src="{png_uri}">{"".join(bottom)}'
            "</figure>")


# ----------------------------------------------------------------------------- SVG charts


def line_chart(series: dict[str, Sequence[tuple[float, float]]], title: str, *, x_label: str = "step",
               width: int = 520, height: int = 220, points: bool = False,
               lines: dict[str, Sequence[tuple[float, float]]] | None = None, integer_x: bool = False) -> str:
    """An inline SVG chart: one polyline (or dots with `points`) per series, plus optional fitted `lines`.

    x ticks sit at round values (`nice_ticks`), whole numbers only with `integer_x` (steps)."""
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
        parts.append(f'<text x="{ml - 4}" y="{sy(yv) + 4:.1f}" font-size="10" text-anchor="end">{_e(_fmt(yv, 3))}</text>')
    for xv in nice_ticks(min(xs), max(xs), 6, integer=integer_x) or [x0]:
        label = str(int(xv)) if integer_x else _fmt(xv, 3)
        parts.append(f'<line x1="{sx(xv):.1f}" x2="{sx(xv):.1f}" y1="{height - mb}" y2="{height - mb + 4}" stroke="#999"/>'
                     f'<text class="xtick" x="{sx(xv):.1f}" y="{height - mb + 14}" font-size="10" '
                     f'text-anchor="middle">{_e(label)}</text>')
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


@dataclass
class TrainingCurves:
    """A run's metrics.jsonl for the report: charts of the series that change, one line for each that does not."""

    charts: list[str] = field(default_factory=list)
    constants: list[str] = field(default_factory=list)  # "lr: 0.0002 (constant)", "valid_loss: 3.1 (only at step 5)"

    def html(self) -> str:
        lines = "".join(f'<li data-constant="{_e(c.split(":")[0])}">{_e(c)}</li>' for c in self.constants)
        return (f'<div class="charts">{"".join(self.charts)}</div>'
                + (f'<ul class="constants">{lines}</ul>' if lines else ""))


def fold_constant(series: dict[str, list[tuple[float, float]]]) -> tuple[dict[str, list[tuple[float, float]]], list[str]]:
    """Split series into those that change and one text line for each that does not: the same value at every
    logged step ("name: value (constant)"), or a single logged value ("name: value (only at step s)")."""
    varying, lines = {}, []
    for name, pts in series.items():
        values = {v for _, v in pts}
        if len(pts) == 1:
            step = int(pts[0][0]) if float(pts[0][0]).is_integer() else pts[0][0]
            lines.append(f"{name}: {pts[0][1]:.4g} (only at step {step})")
        elif len(values) == 1:
            lines.append(f"{name}: {pts[0][1]:.4g} (constant)")
        else:
            varying[name] = pts
    return varying, lines


def training_curves(records: list[dict[str, Any]]) -> TrainingCurves:
    """Charts of a run's metrics.jsonl against the step: every loss-like key on one chart, other numeric keys
    alone; series with one value throughout are folded into text lines (`fold_constant`)."""
    series: dict[str, list[tuple[float, float]]] = {}
    for i, rec in enumerate(records):
        x = rec.get("step", rec.get("global_step", i))
        if not isinstance(x, (int, float)) or isinstance(x, bool):
            continue
        for k, v in rec.items():
            if k in ("step", "global_step", "epoch", "time", "timestamp", "wall_s") or isinstance(v, bool):
                continue
            if isinstance(v, (int, float)) and math.isfinite(v):
                series.setdefault(k, []).append((float(x), float(v)))
    varying, constants = fold_constant(series)
    losses = {k: v for k, v in varying.items() if "loss" in k}
    charts = [line_chart(losses, "loss", integer_x=True)] if losses else []
    charts += [line_chart({k: v}, k, integer_x=True) for k, v in sorted(varying.items()) if k not in losses]
    return TrainingCurves(charts=[c for c in charts if c], constants=sorted(constants))


# ----------------------------------------------------------------------------- tables


MARKS = {"better": "▲ better", "worse": "▼ worse", "no clear difference": "= no clear difference"}


def metric_label(key: str) -> str:
    """'fad_clap' → 'FAD clap', 'kad_vggish' → 'KAD vggish', 'clap_score' → 'CLAP score', 'chroma_cosine' →
    'chroma cosine'."""
    if key == "clap_score":
        return "CLAP score"
    if key == "chroma_cosine":
        return "chroma cosine"
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
    """Rows: FAD, FAD∞, KAD per embedding, the CLAP score and (melody models) the chroma cosine; columns: the sets,
    then the reference floor/ceiling.

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
    if any(metrics.get(n, {}).get("chroma_cosine") is not None for n in set_names):
        frames = ", ".join(f"{metrics.get(n, {}).get('chroma_cosine_frames')} frames" for n in set_names)
        row("chroma cosine", [metrics.get(n, {}).get("chroma_cosine") for n in set_names], None, "chroma_cosine",
            f"higher is better; each clip against the melody it was conditioned on; {frames}")
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
           "a higher CLAP score is better" + (", a higher chroma cosine is better." if "chroma_cosine" in deltas else "."))
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


def _cell(label: str, item: AudioItem, notes: str = "") -> str:
    """One clip: its set and id, a player, the spectrogram with axes, and optional notes."""
    audio_uri, png_uri, axes = clip_media(item)
    return (f'<div><div class="small"><b>{_e(label)}</b> · {_e(item.id)}</div>'
            f'<audio controls preload="metadata" src="{audio_uri}"></audio>'
            + spectrogram_figure(png_uri, axes, f"spectrogram of {item.id} ({label})")
            + (f'<div class="small">{_e(notes)}</div>' if notes else "") + "</div>")


def _clip_cell(scores: SetScores, cid: str, embeddings: list[str]) -> str:
    item = next((i for i in scores.audio_set.items if i.id == cid), None)
    if item is None:
        return '<div class="small">(missing)</div>'
    dist = " · ".join(f"{e} {_fmt(scores.distances.get(e, {}).get(cid), 3)}" for e in embeddings if e in scores.distances)
    notes = f"distance to reference: {dist}" if dist else ""
    clap = scores.clap.per_item.get(cid) if scores.clap else None
    if clap is not None:
        notes += f"{' · ' if notes else ''}CLAP {_fmt(clap, 3)}"
    chroma = scores.chroma.get(cid)
    if chroma is not None:
        notes += f"{' · ' if notes else ''}chroma cosine {_fmt(chroma.mean, 3)}"
    return _cell(LABELS.get(scores.name, scores.name), item, notes)


def clips_section(sets: list[SetScores], ids: list[str], embeddings: list[str],
                  reference: AudioSet | None = None) -> str:
    """One card per clip id: its prompt, then the reference window of that id (when `reference` has one: the
    held-out window whose caption prompted the clips) and each set's clip, side by side, each with a player
    and a spectrogram."""
    by_id = {i.id: i for i in reference.items} if reference is not None else {}
    cards = []
    for cid in ids:
        prompt = next((i.prompt for s in sets for i in s.audio_set.items if i.id == cid and i.prompt), "")
        cells = [_cell("reference (held-out)", by_id[cid])] if cid in by_id else []
        cells += [_clip_cell(s, cid, embeddings) for s in sets]
        cards.append(f'<div class="clip" data-clip="{_e(cid)}"><div class="prompt">{_e(prompt) or "(no prompt)"}</div>'
                     f'<div class="pair" style="grid-template-columns:repeat({len(cells)},minmax(0,1fr))">'
                     f'{"".join(cells)}</div></div>')
    return f'<div class="clips">{"".join(cards)}</div>'


def outliers_section(sets: list[SetScores], embeddings: list[str], with_audio: int = 3,
                     reference: AudioSet | None = None) -> str:
    """Per set and embedding, the outlier clips (`tunekit.eval.outliers`) with the top few playable; a set too
    small to have outliers gets one line saying so instead."""
    out = []
    for s in sets:
        label = LABELS.get(s.name, s.name)
        prompts = s.audio_set.prompts()
        checks = {e: (s.metrics.get(e) or {}).get("outlier_check") or {} for e in embeddings if s.metrics.get(e)}
        if checks and all(c.get("limit") == 0 for c in checks.values()):
            out.append(f'<p class="small" data-outliers="{_e(s.name)}">{_e(label)}: not looked for (outliers=0).</p>')
            continue
        if checks and not any(c.get("ran") for c in checks.values()):
            c = max(checks.values(), key=lambda c: c.get("n", 0))
            out.append(f'<p class="small" data-outliers="{_e(s.name)}">{_e(label)}: {c.get("n", 0)} clips, too few to '
                       f"have outliers (a clip can lie more than {c.get('z', Z):g} standard deviations above the mean "
                       f"distance only in a set of at least {c.get('min_n', MIN_CLIPS)} clips).</p>")
            continue
        for emb in embeddings:
            entries = (s.metrics.get(emb) or {}).get("outliers") or []
            if not entries:
                if checks.get(emb, {}).get("ran"):
                    out.append(f'<p class="small" data-outliers="{_e(s.name)}">{_e(label)} · {_e(emb)}: no outliers '
                               f"(no clip lies more than {Z:g} standard deviations above the mean distance of its "
                               f"{checks[emb].get('n')} clips).</p>")
                continue
            rows = "".join(f'<tr class="outlier"><td class="l">{_e(o["id"])}</td><td>{_e(_fmt(o["distance"]))}</td>'
                           f'<td>{_e(_fmt(o.get("z"), 3))}</td><td class="l">{_e(prompts.get(o["id"], ""))}</td></tr>'
                           for o in entries)
            out.append(f"<h3>{_e(label)} · {_e(emb)}</h3><table><tr><th class='l'>clip</th>"
                       f"<th>Fréchet distance of its frames</th><th>z</th><th class='l'>prompt</th></tr>{rows}</table>")
        first = next((e for e in embeddings if (s.metrics.get(e) or {}).get("outliers")), None)
        if first and with_audio:
            ids = [o["id"] for o in s.metrics[first]["outliers"][:with_audio]]
            out.append(clips_section([s], ids, embeddings, reference))
    return "".join(out)


SAMPLE_SIZE_MARKS = ("for a full-rank covariance", "FAD∞ needs at least")  # the sample-size warnings of eval.fad


def _warnings_html(warnings: list[str]) -> str:
    """Each warning on its own line, except the per-set, per-embedding sample-size warnings of FAD and FAD∞: when
    there are more than three, one line says what they mean and opens to the list."""
    sizes = [w for w in warnings if any(m in w for m in SAMPLE_SIZE_MARKS)]
    other = [w for w in warnings if w not in sizes]
    html = "".join(f'<div class="warn">{_e(w)}</div>' for w in (other if len(sizes) > 3 else warnings))
    if len(sizes) > 3:
        items = "".join(f"<li>{_e(w)}</li>" for w in sizes)
        html += (f'<details class="warn"><summary>{len(sizes)} sample-size warnings: at these sizes FAD is biased '
                 "upwards (fewer frames than embedding dimensions) and FAD∞ falls back to plain FAD; KAD and the "
                 "paired verdicts do not need full-rank covariances. Evaluate more or longer clips (n_samples=, "
                 f"duration=) to remove them.</summary><ul>{items}</ul></details>")
    return html


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
    """The whole page as a string. Clips whose id is also a `reference` clip (run mode: the held-out window that
    prompted them) play beside it; otherwise `n_reference_clips` reference clips get a section of their own."""
    names = [s.name for s in sets]
    ids = sorted({i.id for s in sets for i in s.audio_set.items})[:n_clips]
    warnings = list(metrics.get("warnings", []))
    for n in [*names, "reference"]:
        for emb in embeddings:
            entry = metrics.get(n, {}).get(emb) or {}
            warnings += entry.get("warnings", []) + (entry.get("reconstruction") or {}).get("warnings", [])
    warn_html = _warnings_html(list(dict.fromkeys(warnings)))
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
    if any(metrics.get(n, {}).get("chroma_cosine") is not None for n in names):
        bars += bar_chart({LABELS.get(n, n): metrics.get(n, {}).get("chroma_cosine") for n in names}, "chroma cosine")
    body = [f"<h1>{_e(title)}</h1>",
            f'<div class="meta">{_e(metrics.get("created", ""))} · tunekit {_e(metrics.get("versions", {}).get("tunekit", ""))}'
            f' · mode {_e(metrics.get("mode", ""))} · reference: {_e(metrics.get("reference", {}).get("source", ""))}'
            f' ({_e(metrics.get("reference", {}).get("n_clips", ""))} clips)</div>',
            verdict_lines(metrics), lengths_line(metrics),
            "<h2>Metrics</h2>", metrics_table(metrics, names, embeddings), f'<div class="charts">{bars}</div>', warn_html]
    if training:
        curves = training_curves(training)
        if curves.charts or curves.constants:
            body += ["<h2>Training curves</h2>", curves.html()]
    # Run mode generates from each held-out window's caption: its clips play beside that window. Standalone sets
    # may share file names with the reference by chance, which pairs nothing.
    run_mode = metrics.get("mode") == "run"
    paired_reference = reference if run_mode and reference is not None and set(ids) & set(reference.ids()) else None
    body += ["<h2>Clips</h2>", clips_section(sets, ids, embeddings, paired_reference)]
    body += ["<h2>Outliers</h2>", '<p class="small">Clips whose own frames are unusually far (Fréchet distance) from '
             f"the reference distribution: more than {Z:g} standard deviations above their set's mean distance.</p>",
             outliers_section(sets, embeddings, reference=paired_reference)]
    if reference is not None and paired_reference is None and n_reference_clips:
        cards = "".join(f'<div class="clip" data-clip="{_e(i.id)}"><div class="prompt">{_e(i.prompt or "")}</div>'
                        f'<div class="pair">{_cell("reference", i)}</div></div>'
                        for i in reference.items[:n_reference_clips])
        body += ["<h2>Reference examples</h2>", f'<div class="clips">{cards}</div>']
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
