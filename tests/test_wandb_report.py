"""The W&B Report of an evaluation: built without the network from the keys the eval run logs, its spec written
beside an offline run, the spec read back into the same Report, and a failed save leaving the spec."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("wandb_workspaces")

RUN = {"entity": "acme", "project": "tunekit", "id": "ev4l1d", "name": "lofi-eval"}
SETS, EMBEDDINGS = ["base", "finetuned"], ["clap", "vggish"]


def _metrics() -> dict:
    """metrics.json of a run-mode evaluation: two embeddings, KAD on one, three verdict cases."""
    return {
        "mode": "run",
        "run": "runs/lofi",
        "models": {"generator_base": "facebook/musicgen-small", "generator_finetuned": "runs/lofi/adapter"},
        "generation": {"n_prompts": 24, "duration": 10.0},
        "base": {"clap": {"fad": 2.5, "n": 24, "kad": 1.25, "fad_inf": {"a": 2.0, "r2": 0.99}},
                 "vggish": {"fad": 7.0, "n": 240}, "clap_score": 0.25},
        "finetuned": {"clap": {"fad": 1.5, "n": 24, "kad": 0.75, "fad_inf": {"a": 1.25, "r2": 0.98}},
                      "vggish": {"fad": 6.5, "n": 240}, "clap_score": 0.3125},
        "reference": {"source": "data/prep", "clap": {"reconstruction": {"fad": 0.5, "kad": 0.125}},
                      "vggish": {"reconstruction": {"fad": 1.0}}, "clap_score": 0.375},
        "delta": {
            "fad_clap": {"value": -1.0, "ci95": [-1.5, -0.25], "n": 24, "verdict": "better", "lower_is_better": True},
            "kad_clap": {"value": -0.5, "ci95": [-1.0, 0.125], "n": 24, "verdict": "no clear difference",
                         "lower_is_better": True},
            "fad_vggish": {"value": -0.5, "ci95": [-2.0, 1.0], "n": 24, "verdict": None, "note": "too few frames",
                           "lower_is_better": True},
            "clap_score": {"value": 0.0625, "ci95": [0.03125, 0.09375], "n": 24, "verdict": "worse",
                           "lower_is_better": False},
        },
        "delta_settings": {"of": "finetuned − base", "resamples": 1000},
    }


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """No W&B login and no internet sockets: anything that reaches for a server fails loudly. (wandb's own
    service process is reached over a local Unix socket, which stays open.)"""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    connect = socket.socket.connect

    def refuse(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise OSError(f"the test reached for the network: {address}")
        return connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", refuse)


def _keys(metrics: dict, set_names: list[str], embeddings: list[str]):
    """The keys `wandb_log.log_eval` hands the Report: what its run logs."""
    from tunekit.eval.wandb_log import CLIPS_KEY, METRICS_TABLE_KEY, flat_metrics
    from tunekit.eval.wandb_report import RunKeys

    return RunKeys(list(flat_metrics(metrics, set_names, embeddings)), METRICS_TABLE_KEY, CLIPS_KEY)


def _grid(report):
    import wandb_workspaces.reports.v2 as wr

    grids = [b for b in report.blocks if isinstance(b, wr.PanelGrid)]
    assert len(grids) == 1
    return grids[0]


def test_report_is_built_offline_with_the_verdicts_and_the_runs_keys(no_network):
    import wandb_workspaces.reports.v2 as wr

    from tunekit.eval.wandb_log import CLIPS_KEY, METRICS_TABLE_KEY, flat_metrics
    from tunekit.eval.wandb_report import RunPath, build_report

    metrics = _metrics()
    report = build_report(metrics, RunPath(**RUN), _keys(metrics, SETS, EMBEDDINGS), set_names=SETS,
                          embeddings=EMBEDDINGS)
    assert (report.entity, report.project) == ("acme", "tunekit")
    assert report.title == "tunekit eval: lofi-eval"
    for words in ("acme/tunekit/ev4l1d", "runs/lofi", "facebook/musicgen-small", "runs/lofi/adapter", "24 held-out"):
        assert words in report.description, (words, report.description)
    assert [type(b) for b in report.blocks] == [wr.H2, wr.MarkdownBlock, wr.H2, wr.PanelGrid]

    text = report.blocks[1].text
    assert [line for line in text.splitlines() if line.startswith("- ")] == [
        "- **FAD clap**: fine-tuned is better than base; fine-tuned − base -1, "
        "95% interval [-1.5, -0.25] over 24 prompts",
        "- **KAD clap**: no clear difference between fine-tuned and base; fine-tuned − base -0.5, "
        "95% interval [-1, +0.125] over 24 prompts",
        "- **FAD vggish**: no verdict (too few frames); fine-tuned − base -0.5, "
        "95% interval [-2, +1] over 24 prompts",
        "- **CLAP score**: fine-tuned is worse than base; fine-tuned − base +0.0625, "
        "95% interval [+0.0312, +0.0938] over 24 prompts",
    ]
    assert "1000 bootstrap resamples" in text and "Lower is better for FAD and KAD, higher for CLAP score." in text

    grid = _grid(report)
    (runset,) = grid.runsets
    assert (runset.entity, runset.project) == ("acme", "tunekit")
    assert runset.filters == "Metric(\"ID\") == 'ev4l1d'"

    # Every key a panel reads is one the eval run logs, and every logged metric with a chart has one.
    logged = flat_metrics(metrics, SETS, EMBEDDINGS)
    tables = [p.table_name for p in grid.panels if isinstance(p, wr.WeavePanelSummaryTable)]
    charts = [[m.name for m in p.metrics] for p in grid.panels if isinstance(p, wr.BarPlot)]
    assert tables == [METRICS_TABLE_KEY, CLIPS_KEY]
    assert {k for keys in charts for k in keys} <= set(logged)
    assert charts == [
        ["eval/base/clap/fad", "eval/finetuned/clap/fad", "eval/reference/clap/reconstruction_fad"],
        ["eval/base/clap/kad", "eval/finetuned/clap/kad", "eval/reference/clap/reconstruction_kad"],
        ["eval/base/vggish/fad", "eval/finetuned/vggish/fad", "eval/reference/vggish/reconstruction_fad"],
        ["eval/base/clap_score", "eval/finetuned/clap_score", "eval/reference/clap_score"],
        *[[f"eval/delta/{k}_ci95_lo", f"eval/delta/{k}", f"eval/delta/{k}_ci95_hi"]
          for k in ("fad_clap", "kad_clap", "fad_vggish", "clap_score")],
    ]
    titles = [p.title for p in grid.panels if isinstance(p, wr.BarPlot)]
    assert titles[0] == "FAD clap per set and the reconstruction floor (lower is better)"
    assert titles[3] == "CLAP score per set and the reference's own (higher is better)"
    assert titles[4] == "FAD clap: fine-tuned − base, 95% interval (lower end, difference, upper end)"
    # The interval bars hold the interval's ends, around the difference.
    for keys in charts[4:]:
        lo, value, hi = (logged[k] for k in keys)
        assert lo <= value <= hi, keys
    # No two panels overlap on the grid.
    boxes = [(p.layout.x, p.layout.y, p.layout.w, p.layout.h) for p in grid.panels]
    cells = [(x + i, y + j) for x, y, w, h in boxes for i in range(w) for j in range(h)]
    assert len(cells) == len(set(cells)) and max(x + w for x, _, w, _ in boxes) <= 24


def test_metrics_table_has_a_row_per_metric_with_its_difference_and_verdict():
    from tunekit.eval.wandb_log import metrics_rows

    columns, rows = metrics_rows(_metrics(), SETS, EMBEDDINGS)
    assert columns == ["metric", "base", "finetuned", "reference floor / ceiling", "finetuned − base", "95% lower",
                       "95% upper", "prompts", "verdict"]
    assert rows == [
        ["FAD clap", 2.5, 1.5, 0.5, -1.0, -1.5, -0.25, 24, "better"],
        ["FAD∞ clap", 2.0, 1.25, None, None, None, None, None, None],
        ["KAD clap", 1.25, 0.75, 0.125, -0.5, -1.0, 0.125, 24, "no clear difference"],
        ["FAD vggish", 7.0, 6.5, 1.0, -0.5, -2.0, 1.0, 24, "no verdict: too few frames"],
        ["CLAP score", 0.25, 0.3125, 0.375, 0.0625, 0.03125, 0.09375, 24, "worse"],
    ]


def test_standalone_report_has_no_verdict_and_no_difference_charts(no_network):
    import wandb_workspaces.reports.v2 as wr

    from tunekit.eval.wandb_report import RunPath, build_report

    metrics = {"mode": "standalone", "reference": {"source": "data/ref"},
               "generated": {"source": "samples/", "clap": {"fad": 3.0, "n": 8}, "chroma_cosine": 0.5}}
    report = build_report(metrics, RunPath("", "tunekit", "s1", "eval-out"), _keys(metrics, ["generated"], ["clap"]),
                          set_names=["generated"], embeddings=["clap"])
    assert "no verdict" in report.blocks[1].text and "samples/" in report.description
    assert [p.metrics for p in _grid(report).panels if isinstance(p, wr.BarPlot)] == [
        [wr.Metric("eval/generated/clap/fad")], [wr.Metric("eval/generated/chroma_cosine")]]


def test_spec_round_trips_into_the_same_report(no_network, tmp_path):
    import wandb_workspaces.reports.v2 as wr
    from wandb_workspaces.reports.v2 import internal

    from tunekit.eval.wandb_report import RunPath, build_report, report_from_spec, report_spec, write_spec

    report = build_report(_metrics(), RunPath(**RUN), _keys(_metrics(), SETS, EMBEDDINGS), set_names=SETS,
                          embeddings=EMBEDDINGS)
    path = write_spec(report, tmp_path / "wandb_report.json")
    spec = json.loads(path.read_text())
    assert not list(tmp_path.glob(".wandb_report.*"))  # no temporary file left behind
    model = internal.ReportViewspec.model_validate(spec)
    assert model == internal.ReportViewspec.model_validate(report_spec(report))
    (grid_model,) = [b for b in model.spec.blocks if isinstance(b, internal.PanelGrid)]
    (runset_model,) = grid_model.metadata.run_sets
    assert (runset_model.project.entity_name, runset_model.project.name) == ("acme", "tunekit")
    assert runset_model.filters["filters"] == [
        {"key": {"section": "run", "name": "name"}, "op": "=", "value": "ev4l1d", "disabled": False}]

    again = report_from_spec(spec)
    assert report_spec(again) == spec
    assert internal.ReportViewspec.model_validate(report_spec(again)) == model
    assert (again.title, again.description, again.width) == (report.title, report.description, report.width)
    assert again.blocks[1].text == report.blocks[1].text
    panels = [(type(p), getattr(p, "metrics", None), getattr(p, "table_name", None), p.layout)
              for p in _grid(report).panels]
    assert [(type(p), getattr(p, "metrics", None), getattr(p, "table_name", None), p.layout)
            for p in _grid(again).panels] == panels
    assert _grid(again).runsets[0].filters == _grid(report).runsets[0].filters
    assert isinstance(again, wr.Report)


def test_a_failed_save_writes_the_spec_and_warns(no_network, tmp_path, capsys):
    """Online without a login: `Report.save` fails for real (no API key), the spec is written instead."""
    from tunekit.eval.wandb_report import REPORT_SPEC_FILE, RunPath, report_for_run

    out = report_for_run(_metrics(), RunPath(**RUN), _keys(_metrics(), SETS, EMBEDDINGS), set_names=SETS,
                         embeddings=EMBEDDINGS, out_dir=tmp_path, online=True)
    assert out.url is None and out.spec == str(tmp_path / REPORT_SPEC_FILE)
    assert out.not_saved.startswith("saving failed: ") and "not logged in" in out.not_saved
    assert json.loads((tmp_path / REPORT_SPEC_FILE).read_text())["displayName"] == "tunekit eval: lofi-eval"
    err = capsys.readouterr().err
    assert "warning: W&B Report not saved (saving failed" in err and "publish(" in err

    # Publishing needs a login too: it reads the spec back and fails the same way, leaving metrics.json alone.
    from tunekit.eval.wandb_report import publish

    (tmp_path / "metrics.json").write_text('{"wandb": {"report_not_saved": "W&B is offline"}}')
    with pytest.raises(Exception, match="not logged in"):
        publish(tmp_path / REPORT_SPEC_FILE)
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"wandb": {"report_not_saved": "W&B is offline"}}


def test_offline_eval_run_writes_the_spec_beside_it(no_network, tmp_path, monkeypatch):
    """A real offline W&B run: the spec's run set names that run, every panel key is one the run logged, and
    metrics.json says where the Report is."""
    import wandb

    from tunekit.atomic import write_json
    from tunekit.eval.score import SetScores
    from tunekit.eval.sets import AudioItem, AudioSet
    from tunekit.eval.wandb_log import log_eval
    from tunekit.eval.wandb_report import report_from_spec

    logged: set[str] = set()
    real_log = wandb.sdk.wandb_run.Run.log

    def log_and_record(self, data, *args, **kwargs):
        logged.update(data)
        return real_log(self, data, *args, **kwargs)

    monkeypatch.setattr(wandb.sdk.wandb_run.Run, "log", log_and_record)
    rate, t = 16000, np.arange(8000) / 16000
    sets = []
    for k, name in enumerate(SETS):
        folder = tmp_path / "audio" / name
        folder.mkdir(parents=True)
        items = []
        for i in range(2):
            tone = 0.3 * np.sin(2 * np.pi * (220 + 110 * i + 55 * k) * t)
            sf.write(folder / f"p{i}.wav", tone.astype(np.float32), rate)
            items.append(AudioItem(id=f"p{i}", path=folder / f"p{i}.wav", prompt=f"prompt {i}"))
        sets.append(SetScores(name=name, audio_set=AudioSet(name=name, root=folder, kind="folder", items=items),
                              metrics={}))
    out = tmp_path / "eval"
    metrics = _metrics()
    write_json(out / "metrics.json", metrics)

    run_dir = Path(log_eval(metrics, sets, project="tunekit", run_name="lofi-eval", out_dir=out,
                            embeddings=EMBEDDINGS, mode="offline"))
    run_id = run_dir.name.rsplit("-", 1)[1]
    spec = json.loads((out / "wandb_report.json").read_text())
    report = report_from_spec(spec)
    grid = _grid(report)
    assert grid.runsets[0].filters == f"Metric(\"ID\") == '{run_id}'" and grid.runsets[0].project == "tunekit"
    read = [k for p in grid.panels for k in ([m.name for m in p.metrics] if hasattr(p, "metrics") else [p.table_name])]
    assert len(read) == 2 + 3 * 8 and set(read) <= logged, sorted(set(read) - logged)
    recorded = json.loads((out / "metrics.json").read_text())["wandb"]
    assert recorded == metrics["wandb"]
    assert recorded["run"] == f"tunekit/{run_id}" and Path(recorded["run_dir"]) == run_dir
    assert recorded["report_spec"] == str(out / "wandb_report.json")
    assert recorded["report_not_saved"] == "W&B is offline"
    assert "report_url" not in recorded
