"""Experiment loggers: the CSV logger keeps every metric of a step and replaces what a killed run logged."""

from __future__ import annotations

import csv

from tunekit.loggers import CSVLogger


def _rows(path) -> dict[int, dict[str, str]]:
    with open(path, newline="") as f:
        return {int(r["step"]): r for r in csv.DictReader(f)}


def test_validation_at_a_training_step_keeps_the_training_loss(tmp_path):
    log = CSVLogger(tmp_path, {})
    log.log({"loss": 2.0, "lr": 1e-3}, step=1)
    log.log({"loss": 1.5, "lr": 1e-3}, step=2)
    log.log({"valid_loss": 1.75}, step=2)
    rows = _rows(tmp_path / "metrics.csv")
    assert rows[2]["loss"] == "1.5" and rows[2]["valid_loss"] == "1.75" and rows[2]["lr"] == "0.001", rows
    assert rows[1]["valid_loss"] == "" and rows[1]["loss"] == "2.0", rows


def test_a_resumed_run_replaces_the_rows_from_its_resume_step(tmp_path):
    killed = CSVLogger(tmp_path, {})
    for step in (1, 2, 3):
        killed.log({"loss": float(step)}, step=step)
    killed.log({"valid_loss": 9.0}, step=3)
    resumed = CSVLogger(tmp_path, {})  # resumes from the checkpoint of step 2
    resumed.log({"loss": 30.0}, step=3)
    rows = _rows(tmp_path / "metrics.csv")
    assert sorted(rows) == [1, 2, 3]
    assert rows[3]["loss"] == "30.0" and rows[3]["valid_loss"] == "", rows[3]  # nothing stale from the killed run
