"""A W&B Report of one evaluation, built with wandb-workspaces from the panels of its W&B run.

The Report holds the verdict per metric (markdown), then one panel grid whose run set is filtered to the
evaluation's run: the metrics table, bar charts of each metric per set and of each fine-tuned − base difference
with its 95% interval, and the clips table with audio. `wandb_log` says which keys its run logged (`RunKeys`);
a panel reads only those.

Online, `report_for_run` saves the Report and returns its URL. Offline, or when saving fails, it writes the
Report's spec beside the run instead (`<eval out>/wandb_report.json`: the viewspec W&B stores, camelCase) and
says how to publish it later, after `wandb sync` has uploaded the run:

    python -c "from tunekit.eval.wandb_report import publish; print(publish('runs/mine/eval/wandb_report.json'))"

Building a Report needs no network when the entity is given; turning its run sets into W&B's model does (each
names its project by the server's internal id), so the spec records the project by name and `publish` resolves
it. wandb-workspaces is imported only inside these functions.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tunekit.eval.report import metric_label
from tunekit.eval.score import LOWER_IS_BETTER, log

REPORT_SPEC_FILE = "wandb_report.json"
TITLE_MAX = 128  # wandb-workspaces refuses longer titles
_VERDICT_TEXT = {"better": "fine-tuned is better than base", "worse": "fine-tuned is worse than base",
                 "no clear difference": "no clear difference between fine-tuned and base"}


@dataclass
class RunPath:
    """The W&B run an evaluation logged: entity ("" when not known offline), project and run id."""

    entity: str
    project: str
    id: str
    name: str

    def __str__(self) -> str:
        return "/".join(p for p in (self.entity, self.project, self.id) if p)


@dataclass
class RunKeys:
    """What the evaluation's run logged that the Report's panels read: its scalar keys (in logging order) and
    the keys of its metrics table and its clips table."""

    scalars: list[str]
    metrics_table: str
    clips_table: str


@dataclass
class ReportOutcome:
    """Where the Report went: its URL when saved, else its spec file and why it was not saved."""

    url: str | None = None
    spec: str | None = None
    not_saved: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The `report_*` entries of metrics.json's `wandb` section."""
        return {f"report_{k}": v for k, v in asdict(self).items() if v is not None}


def verdict_lines(metrics: dict[str, Any]) -> list[str]:
    """One markdown line per metric of the paired comparison: the verdict, fine-tuned − base, its interval."""
    lines = []
    for key, d in (metrics.get("delta") or {}).items():
        what = _VERDICT_TEXT.get(d.get("verdict")) or f"no verdict ({d.get('note') or 'no interval'})"
        numbers = [f"fine-tuned − base {d['value']:+.3g}"] if d.get("value") is not None else []
        if d.get("ci95"):
            lo, hi = d["ci95"]
            numbers.append(f"95% interval [{lo:+.3g}, {hi:+.3g}] over {d.get('n')} prompts")
        lines.append(f"- **{metric_label(key)}**: {'; '.join([what, ', '.join(numbers)] if numbers else [what])}")
    return lines


def verdict_markdown(metrics: dict[str, Any]) -> str:
    """The Report's verdict block: one line per metric, and how to read them and the interval charts."""
    lines = verdict_lines(metrics)
    if not lines:
        return ("Standalone evaluation of one generated set against the reference: there is no base model to "
                "compare with, so no verdict. The metrics table and charts below give the scores.")
    settings = metrics.get("delta_settings") or {}
    return "\n".join([
        f"**Verdict per metric** ({settings.get('of', 'fine-tuned − base')}, paired over the same prompts and seeds)",
        "",
        *lines,
        "",
        f"A difference counts only when its 95% interval ({settings.get('resamples')} bootstrap resamples of the "
        f"prompts, percentile interval) excludes 0.{_directions(metrics['delta'])} Each difference chart shows three "
        "bars: the interval's lower end, the difference, the upper end.",
    ])


def _directions(deltas: dict[str, Any]) -> str:
    """' Lower is better for FAD and KAD, higher for CLAP score.' from the deltas' `lower_is_better`."""
    kinds: dict[bool, list[str]] = {True: [], False: []}
    for key, d in deltas.items():
        label = metric_label(key).split(" ")[0] if key.startswith(("fad_", "kad_")) else metric_label(key)
        if d.get("lower_is_better") is not None and label not in kinds[d["lower_is_better"]]:
            kinds[d["lower_is_better"]].append(label)
    parts = [f"lower is better for {' and '.join(kinds[True])}"] if kinds[True] else []
    if kinds[False]:
        parts.append(f"higher{'' if parts else ' is better'} for {' and '.join(kinds[False])}")
    text = ", ".join(parts)
    return f" {text[:1].upper()}{text[1:]}." if text else ""


def _description(metrics: dict[str, Any], run: RunPath) -> str:
    """Which W&B run, training run and models the Report is about."""
    models = metrics.get("models") or {}
    if metrics.get("mode") == "run":
        gen = metrics.get("generation") or {}
        tuned = models.get("generator_finetuned") or metrics.get("run")
        return (f"W&B run {run} ({run.name}): training run {metrics.get('run')}, fine-tuned model {tuned} against "
                f"base {models.get('generator_base')}, {gen.get('n_prompts')} held-out prompts of "
                f"{gen.get('duration')} s.")
    source = (metrics.get("generated") or {}).get("source")
    return (f"W&B run {run} ({run.name}): generated audio {source} against the reference "
            f"{(metrics.get('reference') or {}).get('source')}.")


def _better(kind: str) -> str:
    lower = LOWER_IS_BETTER.get(kind)
    return "" if lower is None else f" ({'lower' if lower else 'higher'} is better)"


def _bar_specs(
    metrics: dict[str, Any], keys: RunKeys, set_names: list[str], embeddings: list[str]
) -> list[tuple[str, list[str]]]:
    """(title, keys) per bar chart: FAD and KAD per embedding and each other per-set score, one bar per set plus
    the reference's floor or ceiling; then each fine-tuned − base difference with its interval. Only logged keys."""
    logged = set(keys.scalars)
    specs: list[tuple[str, list[str]]] = []

    def per_set(label: str, kind: str, bars: list[str], ref_key: str, ref_what: str) -> None:
        bars = [k for k in bars if k in logged]
        if bars:
            with_ref = ref_key in logged
            specs.append((f"{label} per set{f' and {ref_what}' if with_ref else ''}{_better(kind)}",
                          bars + [ref_key] * with_ref))

    for emb in embeddings:
        for kind in ("fad", "kad"):
            per_set(f"{kind.upper()} {emb}", kind, [f"eval/{n}/{emb}/{kind}" for n in set_names],
                    f"eval/reference/{emb}/reconstruction_{kind}", "the reconstruction floor")
    prefixes = tuple(f"eval/{n}/" for n in set_names)
    scores = dict.fromkeys(k.split("/")[2] for k in keys.scalars if k.startswith(prefixes) and k.count("/") == 2)
    for score in scores:  # one number per set: the CLAP score, the chroma cosine
        per_set(metric_label(score), score, [f"eval/{n}/{score}" for n in set_names], f"eval/reference/{score}",
                "the reference's own")
    for key in metrics.get("delta") or {}:
        bars = [f"eval/delta/{key}_ci95_lo", f"eval/delta/{key}", f"eval/delta/{key}_ci95_hi"]
        if all(k in logged for k in bars):
            specs.append((f"{metric_label(key)}: fine-tuned − base, 95% interval (lower end, difference, upper end)",
                          bars))
        elif bars[1] in logged:
            specs.append((f"{metric_label(key)}: fine-tuned − base (no interval)", bars[1:2]))
    return specs


def build_report(
    metrics: dict[str, Any], run: RunPath, keys: RunKeys, *, set_names: list[str], embeddings: list[str]
) -> Any:
    """The `wandb_workspaces.reports.v2.Report` of one evaluation (not saved); needs no network."""
    import wandb_workspaces.reports.v2 as wr
    from wandb_workspaces import expr

    runset = wr.Runset(entity=run.entity, project=run.project, name=f"{run.name} ({run.id})",
                       filters=[expr.Metric("ID") == run.id])
    panels: list[Any] = [
        wr.WeavePanelSummaryTable(table_name=keys.metrics_table, layout=wr.Layout(x=0, y=0, w=24, h=8))
    ]
    bars = _bar_specs(metrics, keys, set_names, embeddings)
    for i, (title, bar_keys) in enumerate(bars):
        panels.append(wr.BarPlot(title=title, metrics=[wr.Metric(k) for k in bar_keys], orientation="v",
                                 layout=wr.Layout(x=8 * (i % 3), y=8 + 8 * (i // 3), w=8, h=8)))
    clips_y = 8 + 8 * ((len(bars) + 2) // 3)
    panels.append(wr.WeavePanelSummaryTable(table_name=keys.clips_table, layout=wr.Layout(x=0, y=clips_y, w=24, h=14)))
    return wr.Report(
        entity=run.entity,
        project=run.project,
        title=f"tunekit eval: {run.name}"[:TITLE_MAX],
        description=_description(metrics, run),
        width="fluid",
        blocks=[
            wr.H2(text="Verdict"),
            wr.MarkdownBlock(text=verdict_markdown(metrics)),
            wr.H2(text="Metrics, charts and clips"),
            wr.PanelGrid(runsets=[runset], panels=panels),
        ],
    )


def report_spec(report: Any) -> dict[str, Any]:
    """The Report's viewspec (W&B's own JSON form of a report), built without the network.

    W&B's model names a run set's project by its internal id, which only the server knows; here each run set
    names its project by entity and name, which `report_from_spec` reads back and `Report.save` resolves.
    """
    from wandb_workspaces.reports.v2 import internal

    unresolved = copy.deepcopy(report)
    projects = []
    for block in unresolved.blocks:
        for runset in getattr(block, "runsets", None) or []:
            projects.append((runset.entity, runset.project))
            runset.entity, runset.project = "", ""
    model = unresolved._to_model()
    runsets = [rs for b in model.spec.blocks if isinstance(b, internal.PanelGrid) for rs in b.metadata.run_sets]
    for runset, (entity, project) in zip(runsets, projects, strict=True):
        runset.project = internal.Project(entity_name=entity, name=project) if project else None
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def report_from_spec(spec: dict[str, Any]) -> Any:
    """The Report a `report_spec` describes."""
    import wandb_workspaces.reports.v2 as wr
    from wandb_workspaces.reports.v2 import internal

    model = internal.ReportViewspec.model_validate(spec)
    report = wr.Report._from_model(model)
    # wandb-workspaces 0.4.13 reads neither the page width nor a summary-table panel's layout back from a
    # model: restore them from the spec.
    report.width = model.spec.width
    grids = [b for b in report.blocks if isinstance(b, wr.PanelGrid)]
    saved = [b for b in model.spec.blocks if isinstance(b, internal.PanelGrid)]
    for grid, grid_model in zip(grids, saved, strict=True):
        for panel, panel_model in zip(grid.panels, grid_model.metadata.panel_bank_section_config.panels, strict=True):
            panel.layout = wr.Layout._from_model(panel_model.layout)
    return report


def write_spec(report: Any, path: Path) -> Path:
    """The Report's spec as JSON at `path`, written atomically."""
    from tunekit.atomic import write_json

    write_json(path, report_spec(report))
    return path


def report_for_run(
    metrics: dict[str, Any], run: RunPath, keys: RunKeys, *, set_names: list[str], embeddings: list[str],
    out_dir: Path, online: bool,
) -> ReportOutcome:
    """Build the Report and save it (online) or write its spec to `<out_dir>/wandb_report.json`; never raises.

    A Report that cannot be built, saved or written is a warning with the reason: the evaluation's own outputs
    are already written and stay valid.
    """
    spec_path = out_dir / REPORT_SPEC_FILE
    try:
        report = build_report(metrics, run, keys, set_names=set_names, embeddings=embeddings)
    except Exception as e:  # noqa: BLE001 - a Report is a convenience; the evaluation stands without it
        log(f"warning: the W&B Report was not built ({type(e).__name__}: {e})")
        return ReportOutcome(not_saved=f"not built: {type(e).__name__}: {e}")
    reason = "W&B is offline"
    if online:
        try:
            report.save()
            log(f"W&B Report: {report.url}")
            return ReportOutcome(url=report.url)
        except Exception as e:  # noqa: BLE001 - network, permissions or API changes: fall back to the spec
            reason = f"saving failed: {type(e).__name__}: {e}"
    try:
        write_spec(report, spec_path)
    except Exception as e:  # noqa: BLE001
        log(f"warning: the W&B Report was not saved ({reason}) and its spec could not be written "
            f"({type(e).__name__}: {e})")
        return ReportOutcome(not_saved=reason)
    log(f"{'warning: ' if online else ''}W&B Report not saved ({reason}); its spec is {spec_path}. Publish it "
        f"after `wandb sync` of the run: python -c \"from tunekit.eval.wandb_report import publish; "
        f"print(publish('{spec_path}'))\"")
    return ReportOutcome(spec=str(spec_path), not_saved=reason)


def record_in_metrics(out_dir: Path, entry: dict[str, Any]) -> None:
    """Merge `entry` into the `wandb` section of `<out_dir>/metrics.json` (atomically; a None value removes its
    key), when that file exists."""
    from tunekit.atomic import write_json
    from tunekit.eval.outputs import METRICS_FILE

    path = out_dir / METRICS_FILE
    if not path.is_file():
        return
    data = json.loads(path.read_text())
    merged = {**(data.get("wandb") or {}), **entry}
    data["wandb"] = {k: v for k, v in merged.items() if v is not None}
    write_json(path, data)


def publish(spec_path: str | os.PathLike[str]) -> str:
    """Save a Report whose spec was written offline; returns its URL and records it in the metrics.json beside it.

    Run `wandb sync <eval out>/wandb/offline-run-*` first: the Report's run set looks its project up on the
    server. An entity left empty offline becomes your default entity.
    """
    import wandb

    from tunekit.errors import TunekitError

    spec_path = Path(spec_path)
    report = report_from_spec(json.loads(spec_path.read_text()))
    if not report.entity:
        report.entity = wandb.Api().default_entity
    for block in report.blocks:
        for runset in getattr(block, "runsets", None) or []:
            runset.entity = runset.entity or report.entity
    try:
        report.save()
    except ValueError as e:
        raise TunekitError(f"{spec_path}: {e} Upload the evaluation's run first: "
                           f"wandb sync {spec_path.parent / 'wandb'}/offline-run-*") from e
    record_in_metrics(spec_path.parent, {"report_url": report.url, "report_not_saved": None})
    return report.url
