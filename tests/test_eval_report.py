"""report.html: content, verdicts and better/worse marks from the paired intervals, self-containment, and a real
render in headless Chromium."""

from __future__ import annotations

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
PROMPTS = {"p0": "warm lofi piano", "p1": "upbeat synth <pop> & drums", "p2": "calm ambient pad"}


def _fit(a: float) -> dict:
    return {"a": a, "b": 40.0, "r2": 0.97, "sizes": [10, 20, 40], "values": [a + 4.0, a + 2.0, a + 1.0], "draws": 3,
            "replace": False}


def _set(tmp: Path, name: str, freq: float, fad: dict[str, float], clap: float) -> SetScores:
    folder = tmp / name
    folder.mkdir()
    items = []
    for i, (cid, prompt) in enumerate(PROMPTS.items()):
        t = np.arange(16000) / 16000
        sf.write(folder / f"{cid}.wav", (0.3 * np.sin(2 * np.pi * freq * (i + 1) * t)).astype(np.float32), 16000)
        items.append(AudioItem(id=cid, path=folder / f"{cid}.wav", prompt=prompt))
    metrics = {"n_clips": 3, "clap_score": clap, "clap_score_n": 3}
    for emb in EMBEDDINGS:
        metrics[emb] = {"fad": fad[emb], "n": 30, "dim": 8, "fad_inf": _fit(fad[emb] - 0.5), "warnings": [],
                        "kad": fad[emb] / 10, "kad_n": 30,
                        "outliers": [{"id": "p1", "distance": 9.0}, {"id": "p0", "distance": 2.0}]}
    distances = {emb: {cid: float(i) for i, cid in enumerate(PROMPTS)} for emb in EMBEDDINGS}
    score = ClapScore(mean=clap, std=0.01, n=3, per_item={cid: clap for cid in PROMPTS})
    return SetScores(name=name, audio_set=AudioSet(name, folder, "folder", items), metrics=metrics,
                     distances=distances, clap=score)


def _delta(value: float, ci: tuple[float, float], verdict: str, lower: bool) -> dict:
    return {"value": value, "ci95": list(ci), "n": 40, "verdict": verdict, "lower_is_better": lower,
            "resamples": 1000, "note": None}


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, str, dict]:
    tmp = tmp_path_factory.mktemp("report")
    base = _set(tmp, "base", 220.0, {"clap": 0.8, "vggish": 5.0}, 0.20)
    finetuned = _set(tmp, "finetuned", 330.0, {"clap": 0.5, "vggish": 6.0}, 0.30)
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
        },
        "delta_settings": {"resamples": 1000},
    }
    metrics["reference"]["crop"] = {"seconds": 30.0, "cropped": 2}
    training = [{"step": s, "loss": 6.0 / s, "lr": 1e-4, "valid_loss": (6.5 / s if s % 2 == 0 else None)} for s in range(1, 9)]
    html = render_report(metrics, [base, finetuned], title="eval <test>", embeddings=EMBEDDINGS, n_clips=10,
                         reference=base.audio_set, training=training, n_reference_clips=1)
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
    assert html.count("<audio") == 3 * 2 + 2 * 2 + 1  # 3 prompts × 2 sets, 2 outliers × 2 sets, 1 reference clip
    assert html.count('src="data:image/png;base64,') == html.count("<audio")
    assert html.count('src="data:audio/ogg;base64,') == html.count("<audio")
    assert "a top-level warning" in html and "reconstructed reference: 40 frames" in html


def test_training_curves_are_svg_polylines():
    charts = training_curves([{"step": s, "loss": 1.0 / s, "lr": 0.1, "note": "x"} for s in range(1, 5)])
    assert len(charts) == 2 and all(c.startswith("<svg") for c in charts)
    assert "<polyline" in charts[0] and ">loss<" in charts[0]


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
    assert len(re.findall(r'<tr data-metric="', dom)) == 3 * len(EMBEDDINGS) + 1
    assert len(re.findall(r'<tr class="outlier"', dom)) == 2 * 2 * len(EMBEDDINGS)
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
