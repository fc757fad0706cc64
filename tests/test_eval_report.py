"""report.html: content, verdicts and better/worse marks from the paired intervals, reference windows beside the
generated clips, spectrogram axes, training curves in whole steps with constant series folded, outliers only where
a set can have any, self-containment, and a real render in headless Chromium."""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tunekit.eval.clap_score import ClapScore
from tunekit.eval.report import render_report, training_curves
from tunekit.eval.score import SetScores
from tunekit.eval.sets import AudioItem, AudioSet

EMBEDDINGS = ["clap", "vggish"]
# Twelve prompts: one more than the eleven a set needs before any clip can be an outlier (z > 3).
PROMPTS = {f"p{i:02d}": f"prompt {i}" for i in range(12)} | {"p01": "upbeat synth <pop> & drums"}
SHOWN = 4  # report_clips
RATE = 16000


def _fit(a: float) -> dict:
    return {"a": a, "b": 40.0, "r2": 0.97, "sizes": [10, 20, 40], "values": [a + 4.0, a + 2.0, a + 1.0], "draws": 3,
            "replace": False}


def _tone_file(path: Path, freq: float) -> None:
    t = np.arange(RATE) / RATE
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), RATE)


def _freq(kind: str, i: int) -> float:
    """Each clip's own tone, so a player's audio tells which clip it is."""
    return {"reference": 300.0, "base": 500.0, "finetuned": 700.0}[kind] + 20.0 * i


def _reference(tmp: Path) -> AudioSet:
    folder = tmp / "reference"
    folder.mkdir()
    items = []
    for i, (cid, prompt) in enumerate(PROMPTS.items()):
        _tone_file(folder / f"{cid}.wav", _freq("reference", i))
        items.append(AudioItem(id=cid, path=folder / f"{cid}.wav", prompt=prompt))
    return AudioSet("reference", folder, "prep", items)


def _set(tmp: Path, name: str, fad: dict[str, float], clap: float, chroma: float, far: str | None) -> SetScores:
    from tunekit.eval.chroma_cosine import ClipChroma, chroma_fields
    from tunekit.eval.outliers import find_outliers

    folder = tmp / name
    folder.mkdir()
    items = []
    for i, (cid, prompt) in enumerate(PROMPTS.items()):
        _tone_file(folder / f"{cid}.wav", _freq(name, i))
        items.append(AudioItem(id=cid, path=folder / f"{cid}.wav", prompt=prompt))
    # Distances 1.0, 1.1, …; `far` lies far above the rest.
    distances = {cid: (40.0 if cid == far else 1.0 + 0.1 * i) for i, cid in enumerate(PROMPTS)}
    metrics = {"n_clips": len(PROMPTS), "clap_score": clap, "clap_score_n": len(PROMPTS)}
    for emb in EMBEDDINGS:
        found = find_outliers(distances, 5)
        metrics[emb] = {"fad": fad[emb], "n": 30, "dim": 8, "fad_inf": _fit(fad[emb] - 0.5), "warnings": [],
                        "kad": fad[emb] / 10, "kad_n": 30, "outliers": found["outliers"],
                        "outlier_check": found["check"]}
    per_clip = {cid: ClipChroma(total=chroma * 8, frames=8) for cid in PROMPTS}
    metrics.update(chroma_fields(per_clip))
    score = ClapScore(mean=clap, std=0.01, n=len(PROMPTS), per_item={cid: clap for cid in PROMPTS})
    return SetScores(name=name, audio_set=AudioSet(name, folder, "folder", items), metrics=metrics,
                     distances={emb: distances for emb in EMBEDDINGS}, clap=score, chroma=per_clip)


def _delta(value: float, ci: tuple[float, float], verdict: str, lower: bool) -> dict:
    return {"value": value, "ci95": list(ci), "n": 40, "verdict": verdict, "lower_is_better": lower,
            "resamples": 1000, "note": None}


TRAINING = [{"step": s, "loss": 6.0 / s, "lr": 1e-4, "valid_loss": (6.5 / s if s % 2 == 0 else None)}
            for s in range(1, 9)]


def _metrics(base: SetScores, finetuned: SetScores) -> dict:
    metrics = {
        "mode": "run", "created": "2026-01-01T00:00:00+00:00", "versions": {"tunekit": "0.1.0"},
        "embeddings": {e: {"model_id": f"{e}-model", "policy": f"{e} windows"} for e in EMBEDDINGS},
        "base": base.metrics, "finetuned": finetuned.metrics,
        "reference": {"source": "data/ref", "n_clips": 3, "clap_score": 0.35,
                      "clap": {"n": 40, "reconstruction": {"fad": 0.1, "fad_inf": _fit(0.05), "n": 40, "warnings": []}},
                      "vggish": {"n": 40, "reconstruction": {"fad": 1.0, "fad_inf": _fit(0.9), "n": 40,
                                                             "warnings": ["reconstructed reference: 40 frames for 128-d"]}}},
        "warnings": ["a top-level warning"],
        "generation": {"duration": 30.0, "duration_source": "median length of the reference windows"},
        "delta": {
            "fad_clap": _delta(-0.3, (-0.5, -0.1), "better", True),
            "kad_clap": _delta(-0.03, (-0.08, 0.02), "no clear difference", True),
            "fad_vggish": _delta(1.0, (-0.5, 2.5), "no clear difference", True),
            "kad_vggish": _delta(0.1, (0.02, 0.2), "worse", True),
            "clap_score": _delta(0.1, (0.04, 0.15), "better", False),
            "chroma_cosine": _delta(0.25, (0.1, 0.4), "better", False),
        },
        "delta_settings": {"resamples": 1000},
    }
    metrics["reference"]["crop"] = {"seconds": 30.0, "cropped": 2}
    return metrics


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, str, dict]:
    tmp = tmp_path_factory.mktemp("report")
    base = _set(tmp, "base", {"clap": 0.8, "vggish": 5.0}, 0.20, 0.375, far="p07")
    finetuned = _set(tmp, "finetuned", {"clap": 0.5, "vggish": 6.0}, 0.30, 0.625, far=None)
    metrics = _metrics(base, finetuned)
    html = render_report(metrics, [base, finetuned], title="eval <test>", embeddings=EMBEDDINGS, n_clips=SHOWN,
                         reference=_reference(tmp), training=TRAINING, n_reference_clips=1)
    path = tmp / "report.html"
    path.write_text(html, encoding="utf-8")
    return path, html, metrics


def _row(html: str, metric: str) -> str:
    m = re.search(rf'<tr data-metric="{re.escape(metric)}">(.*?)</tr>', html)
    assert m, metric
    return m.group(1)


def test_metrics_table_marks_only_differences_whose_interval_excludes_zero(report):
    _, html, _ = report
    assert 'class="better">▲ better (-0.3 [-0.5, -0.1])' in _row(html, "FAD clap")  # lower FAD is better
    assert 'class="worse">▼ worse (+0.1 [+0.02, +0.2])' in _row(html, "KAD vggish")
    assert 'class="better">▲ better (+0.1 [+0.04, +0.15])' in _row(html, "CLAP score")  # higher CLAP is better
    # FAD vggish went up by 1, but its interval spans 0: no arrow.
    vggish = _row(html, "FAD vggish")
    assert 'class="unclear">= no clear difference (+1 [-0.5, +2.5])' in vggish and "▼" not in vggish
    assert "▲" not in _row(html, "KAD clap") and "▼" not in _row(html, "KAD clap")
    assert "no interval" in _row(html, "FAD∞ clap") and "▲" not in _row(html, "FAD∞ clap")
    assert "<td>0.35</td>" in _row(html, "CLAP score")  # the reference ceiling
    assert "<td>1</td>" in _row(html, "FAD vggish")  # the reconstruction floor
    assert "<td>0.3</td>" in _row(html, "FAD∞ clap")  # a of the fine-tuned fit (0.5 − 0.5 + … as given)
    chroma = _row(html, "chroma cosine")  # higher is better: each clip against the melody that conditioned it
    assert "<td>0.375</td><td>0.625</td>" in chroma and 'class="better">▲ better (+0.25 [+0.1, +0.4])' in chroma


def test_report_opens_with_one_verdict_per_metric(report):
    _, html, metrics = report
    top = html[: html.index("<h2>Metrics")]
    lines = re.findall(r'<li data-delta="([^"]+)" class="([^"]+)"><b>([^<]+)</b>: ([^<]+)<', top)
    assert [key for key, *_ in lines] == list(metrics["delta"])
    got = {label: (css, what.strip()) for _, css, label, what in lines}
    assert got["FAD clap"] == ("better", "fine-tuned is better than base")
    assert got["FAD vggish"] == ("unclear", "no clear difference between fine-tuned and base")
    assert got["KAD vggish"] == ("worse", "fine-tuned is worse than base")
    assert got["CLAP score"] == ("better", "fine-tuned is better than base")
    assert got["chroma cosine"] == ("better", "fine-tuned is better than base")
    assert "a higher chroma cosine is better" in top
    assert "95% interval [-0.5, +2.5] over 40 prompts" in top
    assert "cropped to their first 30 s" in top


def test_no_marks_without_an_interval(report, tmp_path):
    from tunekit.eval.report import metrics_table

    _, _, metrics = report
    bare = {k: v for k, v in metrics.items() if k != "delta"}
    html = metrics_table(bare, ["base", "finetuned"], EMBEDDINGS)
    assert "▲" not in html and "▼" not in html and "(-0.3) <span" in html


def test_page_is_self_contained_and_escaped(report):
    _, html, _ = report
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert "<link" not in html and "@import" not in html and "url(" not in html
    assert "upbeat synth &lt;pop&gt; &amp; drums" in html and "eval &lt;test&gt;" in html
    # SHOWN prompts × (reference, base, fine-tuned), then base's one outlier beside its reference window.
    assert html.count("<audio") == SHOWN * 3 + 2 and "Reference examples" not in html
    assert html.count('src="data:image/png;base64,') == html.count("<audio")
    assert html.count('src="data:audio/ogg;base64,') == html.count("<audio")
    assert "a top-level warning" in html and "reconstructed reference: 40 frames" in html


def _clip_audio(card: str) -> list[tuple[str, np.ndarray, int]]:
    """(label, decoded audio, rate) of each player in a clip card, in page order."""
    labels = re.findall(r"<b>([^<]+)</b>", card)
    uris = re.findall(r'<audio [^>]*src="data:audio/ogg;base64,([^"]+)"', card)
    assert len(labels) == len(uris), (labels, len(uris))
    out = []
    for label, b64 in zip(labels, uris, strict=True):
        audio, rate = sf.read(io.BytesIO(base64.b64decode(b64)), dtype="float64")
        out.append((label, audio, rate))
    return out


def _dominant_hz(audio: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.fft.rfftfreq(len(audio), 1.0 / rate)[spectrum.argmax()])


def test_reference_window_plays_beside_base_and_finetuned(report):
    _, html, _ = report
    clips = html[html.index("<h2>Clips"): html.index("<h2>Outliers")]
    cards = re.findall(r'<div class="clip" data-clip="([^"]+)">(.*?)</div></div></div>', clips)
    assert [cid for cid, _ in cards] == list(PROMPTS)[:SHOWN]
    for i, (cid, card) in enumerate(cards):
        players = _clip_audio(card)
        assert [label for label, *_ in players] == ["reference (held-out)", "base", "fine-tuned"], cid
        for (label, audio, rate), kind in zip(players, ("reference", "base", "finetuned"), strict=True):
            # Each player holds that clip's own tone (1 s: 1 Hz bins; Vorbis keeps the peak in its bin).
            assert abs(_dominant_hz(audio, rate) - _freq(kind, i)) <= 1.0, (cid, label)
            assert rate == RATE and abs(len(audio) - RATE) <= 1, (cid, label, len(audio))


def test_standalone_sets_are_not_paired_with_reference_clips_of_the_same_name(tmp_path):
    """Outside run mode a generated clip named like a reference file was not made from it: no pairing."""
    base = _set(tmp_path, "base", {"clap": 0.8, "vggish": 5.0}, 0.20, 0.375, far=None)
    finetuned = _set(tmp_path, "finetuned", {"clap": 0.5, "vggish": 6.0}, 0.30, 0.625, far=None)
    metrics = {**_metrics(base, finetuned), "mode": "standalone"}
    html = render_report(metrics, [base, finetuned], title="t", embeddings=EMBEDDINGS, n_clips=SHOWN,
                         reference=_reference(tmp_path), n_reference_clips=1)
    assert "reference (held-out)" not in html


def test_every_spectrogram_has_labelled_time_and_frequency_axes(report):
    _, html, _ = report
    figures = re.findall(r'<figure class="spec">(.*?)</figure>', html)
    assert len(figures) == html.count("<img") == html.count("<audio")
    for fig in figures:
        assert "time (s)" in fig and "Hz (mel scale)" in fig
        time = re.findall(r'<svg class="tax".*?</svg>', fig)[0]
        freq = re.findall(r'<svg class="fax".*?</svg>', fig)[0]
        # 1 s clips, whose frames are centred from 32 ms to 968 ms: ticks every 0.2 s; 16 kHz audio: up to 8 kHz.
        assert re.findall(r'class="tick"[^>]*>([^<]+)<', time) == ["0.2", "0.4", "0.6", "0.8"]
        assert re.findall(r'class="tick"[^>]*>([^<]+)<', freq) == ["5k", "2k", "1k", "500", "100"]


@pytest.mark.parametrize(("rate", "seconds"), [(16000, 1.0), (32000, 2.0), (44100, 7.3)])
def test_spectrogram_axes_point_where_the_image_shows_a_click_and_a_tone(rate, seconds):
    """A click at a known time and a tone at a known frequency, found in the picture, sit where the axes'
    ticks (linear in time, linear in mel) say those values are, to within a frame and a mel band."""
    from tunekit.eval.images import decode_png, hop_for, hz_to_mel, spectrogram_axes, spectrogram_png

    width, height = 480, 96
    n = int(seconds * rate)
    click_s, tone_hz = 0.61 * seconds, 3000.0
    click = np.zeros(n, np.float32)
    click[int(click_s * rate)] = 1.0
    tone = (0.3 * np.sin(2 * np.pi * tone_hz * np.arange(n) / rate)).astype(np.float32)
    axes = spectrogram_axes(n, rate, width=width, height=height)
    assert len(axes.time) >= 3 and len(axes.frequency) >= 3

    brightness = decode_png(spectrogram_png(click, rate, width=width, height=height)).astype(float).sum(axis=(0, 2))
    column = (int(brightness.argmax()) + 0.5) / width
    t_pos, t_val = np.array([p for p, _ in axes.time]), np.array([float(v) for _, v in axes.time])
    slope, offset = np.polyfit(t_val, t_pos, 1)
    assert np.abs(slope * t_val + offset - t_pos).max() < 1e-9  # the time axis is linear
    # The brightest frame is the one centred nearest the click (within hop/2); its columns round to it.
    tol = slope * hop_for(rate) / 2 / rate + 1.0 / width
    assert abs(column - (slope * click_s + offset)) <= tol, (column, slope * click_s + offset, tol)

    rows = decode_png(spectrogram_png(tone, rate, width=width, height=height)).astype(float).sum(axis=(1, 2))
    row = (int(rows.argmax()) + 0.5) / height
    f_pos = np.array([p for p, _ in axes.frequency])
    f_mel = hz_to_mel([float(v[:-1]) * 1000 if v.endswith("k") else float(v) for _, v in axes.frequency])
    slope, offset = np.polyfit(f_mel, f_pos, 1)
    assert np.abs(slope * f_mel + offset - f_pos).max() < 1e-9  # the frequency axis is linear in mel
    expected = slope * float(hz_to_mel(tone_hz)) + offset
    assert abs(row - expected) <= 0.5 / height, (row, expected)  # the band whose centre is nearest the tone


def _xticks(chart: str) -> list[str]:
    return re.findall(r'class="xtick"[^>]*>([^<]+)<', chart)


def test_training_curves_step_in_whole_steps_and_fold_constant_series():
    curves = training_curves(TRAINING)
    assert len(curves.charts) == 1 and curves.charts[0].startswith("<svg") and "<title>loss</title>" in curves.charts[0]
    assert _xticks(curves.charts[0]) == ["2", "4", "6", "8"]  # steps 1…8: whole steps only, never 4.5
    assert curves.constants == ["lr: 0.0001 (constant)"]  # no schedule: a line, not a flat chart
    assert curves.charts[0].count("<polyline") == 2  # loss and valid_loss (every other step)

    long_run = [{"step": s, "loss": 1.0 / (1 + s), "grad_norm": 1.0 + (s % 7), "lr": 2e-4, "tokens_per_s": 5.0}
                for s in range(0, 12346, 100)] + [{"step": 12345, "valid_loss": 0.5}]
    curves = training_curves(long_run)
    assert [re.search(r"<title>([^<]+)</title>", c).group(1) for c in curves.charts] == ["loss", "grad_norm"]
    for chart in curves.charts:
        ticks = [int(t) for t in _xticks(chart)]  # int() fails on "1.2e+04" or "2500.5"
        steps = np.diff(ticks)
        assert len(ticks) >= 3 and (steps == steps[0]).all() and 0 <= ticks[0] and ticks[-1] <= 12345, ticks
    assert curves.constants == ["lr: 0.0002 (constant)", "tokens_per_s: 5 (constant)",
                                "valid_loss: 0.5 (only at step 12345)"]


def test_report_lists_constants_instead_of_flat_charts(report):
    _, html, _ = report
    section = html[html.index("<h2>Training curves"): html.index("<h2>Clips")]
    assert '<li data-constant="lr">lr: 0.0001 (constant)</li>' in section
    assert "<title>lr</title>" not in section and section.count("<svg") == 1


def test_outliers_are_listed_only_where_the_set_can_have_any(report, tmp_path):
    from tunekit.eval.outliers import MIN_CLIPS
    from tunekit.eval.report import outliers_section

    _, html, _ = report
    section = html[html.index("<h2>Outliers"): html.index("<h2>FAD∞")]
    rows = re.findall(r'<tr class="outlier"><td class="l">([^<]+)</td><td>[^<]+</td><td>([^<]+)</td>', section)
    assert [cid for cid, _ in rows] == ["p07", "p07"]  # base, once per embedding
    assert all(float(z) > 3 for _, z in rows)
    assert section.count("fine-tuned · ") == 2 and "no outliers" in section  # checked, none found

    # The same far clip in a set one clip short of MIN_CLIPS: no list, one line saying why.
    base = _set(tmp_path, "base", {"clap": 0.8, "vggish": 5.0}, 0.2, 0.5, far="p07")
    keep = set(list(PROMPTS)[: MIN_CLIPS - 1]) | {"p07"}
    small = {cid: d for cid, d in base.distances["clap"].items() if cid in keep}
    assert len(small) == MIN_CLIPS - 1
    from tunekit.eval.outliers import find_outliers

    for emb in EMBEDDINGS:
        found = find_outliers(small, 5)
        base.metrics[emb].update(outliers=found["outliers"], outlier_check=found["check"])
    text = outliers_section([base], EMBEDDINGS)
    assert '<tr class="outlier"' not in text and "<audio" not in text
    assert f"base: {MIN_CLIPS - 1} clips, too few to have outliers" in text and f"at least {MIN_CLIPS} clips" in text


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _run_chromium(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    exe = _chromium()
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run installs it with `apt-get install -y chromium`")
        pytest.skip("chromium is not installed (CI installs it with `apt-get install -y chromium`)")
    base = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp / 'profile'}", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000"]
    return subprocess.run(base + args, capture_output=True, text=True, timeout=120)


def test_report_renders_in_headless_chromium(report, tmp_path):
    path, html, _ = report
    done = _run_chromium(["--dump-dom", path.as_uri()], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    body = re.search(r"<body([^>]*)>", dom).group(1)
    attrs = dict(re.findall(r'data-([\w-]+)="([^"]*)"', body))
    n_audio, n_img = html.count("<audio"), html.count("<img")
    assert attrs.get("media-ready") == "1", attrs
    assert attrs["images-ok"] == str(n_img) and attrs["images-bad"] == "0"  # every spectrogram PNG decoded
    assert attrs["audio-ok"] == str(n_audio) and attrs["audio-bad"] == "0"  # every OGG clip loaded its metadata
    assert len(re.findall(r'<tr data-metric="', dom)) == 3 * len(EMBEDDINGS) + 2  # + CLAP score, chroma cosine
    assert len(re.findall(r'<tr class="outlier"', dom)) == len(EMBEDDINGS)  # base's one far clip
    assert dom.count('<figure class="spec">') == n_img and dom.count(">time (s)</text>") == n_img
    assert dom.count("<svg") >= 5  # training curves, FAD∞ fits, bar charts
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console


def test_report_screenshot(report, tmp_path):
    path, _, _ = report
    shot = tmp_path / "shot.png"
    done = _run_chromium(["--hide-scrollbars", "--window-size=1200,1600", f"--screenshot={shot}", path.as_uri()], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


def test_many_sample_size_warnings_fold_into_one_line_that_opens_to_them():
    from html import escape

    from tunekit.eval.fad import rank_warning
    from tunekit.eval.report import _warnings_html

    sizes = [rank_warning(12, 32, f"set{i}") for i in range(5)]
    other = "generated clips are 10 s long (median) and reference clips 30 s"
    html = _warnings_html([other, *sizes])
    assert html.count("<details") == 1 and "5 sample-size warnings" in html
    assert html.count('<div class="warn">') == 1 and other in html
    assert all(f"<li>{escape(w)}</li>" in html for w in sizes)
    few = _warnings_html(sizes[:3])  # three or fewer stay lines of their own
    assert "<details" not in few and few.count('<div class="warn">') == 3
