"""The metrics log: JSONL, CSV and TensorBoard agree, also across a resume."""

from __future__ import annotations

import csv

import pytest

from torchtcn.metrics import MetricsWriter


def _records(steps, scale=1.0):
    return [{"epoch": i + 1, "step": s, "train_loss": scale * s, "valid_mse": scale * s / 2}
            for i, s in enumerate(steps)]


def test_csv_and_jsonl_hold_the_same_table(tmp_path):
    w = MetricsWriter(tmp_path, use_tensorboard=False)
    for r in _records([10, 20]):
        w.write(r)
    w.write({"epoch": 3, "step": 30, "train_loss": 3.0, "valid_mse": 1.5, "lr": 0.1})  # a new column
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [r["step"] for r in rows] == ["10", "20", "30"] and rows[0]["lr"] == "" and rows[2]["lr"] == "0.1"
    assert [r["step"] for r in w.read()] == [10, 20, 30]


def test_truncate_after_drops_later_records(tmp_path):
    w = MetricsWriter(tmp_path, use_tensorboard=False)
    for r in _records([10, 20, 30]):
        w.write(r)
    w.truncate_after(20)
    assert [r["step"] for r in w.read()] == [10, 20]
    assert len(list(csv.DictReader(open(tmp_path / "metrics.csv")))) == 2


def test_non_finite_numbers_are_written_as_standard_json(tmp_path):
    """A diverged epoch's NaN is null in the JSONL (Python's ``NaN`` token is not JSON) and an
    empty cell in the CSV, also after a truncation rewrites both."""
    import json

    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")

    w = MetricsWriter(tmp_path, use_tensorboard=False)
    w.write({"epoch": 1, "step": 10, "train_loss": float("nan"), "valid_mse": float("inf")})
    w.write({"epoch": 2, "step": 20, "train_loss": 1.0, "valid_mse": 2.0})
    for truncated in (False, True):
        if truncated:
            w.truncate_after(10)
        lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
        first = json.loads(lines[0], parse_constant=refuse)
        assert first["train_loss"] is None and first["valid_mse"] is None
        rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
        assert rows[0]["train_loss"] == "" and len(rows) == (1 if truncated else 2)


def _scalars(folder, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_tensorboard_gets_every_number_and_a_resume_replaces_the_repeated_steps(tmp_path):
    pytest.importorskip("tensorboard")
    w = MetricsWriter(tmp_path)
    for r in _records([10, 20, 30]):
        w.write(r)
    w.close()
    assert _scalars(tmp_path / "tensorboard", "valid_mse") == [(10, 5.0), (20, 10.0), (30, 15.0)]
    # a resumed run (from step 20) logs step 30 again, with other numbers
    resumed = MetricsWriter(tmp_path)
    resumed.truncate_after(20)
    resumed.write(_records([10, 20, 30], scale=2.0)[2])
    resumed.close()
    assert _scalars(tmp_path / "tensorboard", "valid_mse") == [(10, 5.0), (20, 10.0), (30, 30.0)]
    assert _scalars(tmp_path / "tensorboard", "train_loss")[-1] == (30, 60.0)
