"""The ``series`` task: forecasting a CSV time series (loader, splits, windows, training)."""

from __future__ import annotations

import math

import pytest
import torch

from torchtcn.data.series import chronological_split, load_series_csv
from torchtcn.tasks import build_run
from torchtcn.train import Trainer

TINY = {"channels": "8,8", "kernel_size": "2", "seq_len": "24", "valid_len": "10", "stride": "4",
        "batch_size": "8", "eval_batch_size": "4"}
TINY_SEQ, TINY_VALID = int(TINY["seq_len"]), int(TINY["valid_len"])


def write_csv(path, rows: int = 200, extra: str = ""):
    """Columns: a date (left out), ``step`` = the row's time index, and a noisy sine."""
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(rows, generator=gen)
    lines = ["date,step,wave" + extra]
    lines += [f"2026-{i}, {i},{math.sin(i / 4) + 0.1 * noise[i]:.6f}" for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_loader_keeps_numeric_columns_and_names_every_problem(tmp_path):
    data = load_series_csv(write_csv(tmp_path / "s.csv", 20), target=["wave"])
    assert data.columns == ["step", "wave"] and data.target_index == [1]
    assert data.values.shape == (20, 2) and data.values[:, 0].tolist() == list(range(20))
    assert load_series_csv(tmp_path / "s.csv").target == ["step", "wave"]

    bad = tmp_path / "gap.csv"
    bad.write_text("step,wave\n0,1.0\n1,\n2,3.0\n")
    with pytest.raises(ValueError, match=r"column 'wave' is numeric but row 3 holds ''"):
        load_series_csv(bad)
    bad.write_text("step,wave\n0,1.0\n1,2.0,9\n2,3.0\n")
    with pytest.raises(ValueError, match="row 3 has 3 fields, the header 2"):
        load_series_csv(bad)
    bad.write_text("name,city\na,b\nc,d\n")
    with pytest.raises(ValueError, match="no numeric column"):
        load_series_csv(bad)
    bad.write_text("step,wave\n0,1\n1,nan\n2,3\n")
    with pytest.raises(ValueError, match="row 3 holds 'nan'"):
        load_series_csv(bad)
    with pytest.raises(ValueError, match=r"target columns \['load'\].*numeric columns: \['step', 'wave'\]"):
        load_series_csv(tmp_path / "s.csv", target=["load"])
    with pytest.raises(FileNotFoundError, match="no CSV file at"):
        load_series_csv(tmp_path / "missing.csv")


def test_chronological_split():
    assert chronological_split(100, 0.1, 0.2) == (70, 80)
    assert chronological_split(5, 0.1, 0.1) == (3, 4)  # every split gets a step
    with pytest.raises(ValueError, match="leave data to train on"):
        chronological_split(100, 0.5, 0.5)
    with pytest.raises(ValueError, match="valid_fraction must be in"):
        chronological_split(100, 0.0, 0.2)


@pytest.mark.parametrize("horizon", [1, 3])
def test_every_target_is_scored_once_with_its_own_past_as_input(tmp_path, horizon):
    path = write_csv(tmp_path / "s.csv")
    run = build_run("series", "tcn", {"data": str(path), "target": "step", "horizon": str(horizon),
                                      **TINY})
    train_steps = torch.arange(140.0)  # the training part of ``step``: rows 0..139
    mean, std = train_steps.mean(), train_steps.std(unbiased=False)
    bounds = {"train": (0, 140), "valid": (140, 160), "test": (160, 200)}
    for split, (a, b) in bounds.items():
        ds = run.datasets[split]
        batch = ds.batch(torch.arange(len(ds)))
        scored = batch.mask.bool()
        targets = batch.y[:, 0][scored] * std + mean  # the time index each forecast is for
        inputs = batch.x[:, 0][scored] * std + mean  # the time index of the step it reads
        torch.testing.assert_close(targets - inputs, torch.full_like(targets, horizon))
        times = sorted(round(v) for v in targets.tolist())
        if split == "train":  # overlapping windows: every target at least once
            assert sorted(set(times)) == list(range(max(a, horizon), b))
        else:  # every target exactly once, context from before the split
            assert times == list(range(a, b))
            first = batch.x[0, 0] * std + mean
            assert round(first[0].item()) == a - horizon - (TINY_SEQ - TINY_VALID)
    train_x = run.datasets["train"].x[:, :140]
    torch.testing.assert_close(train_x.mean(1), torch.zeros(2), atol=1e-5, rtol=0)


@pytest.mark.parametrize("model", ["tcn", "gru"])
def test_series_trains_and_reports_normalised_mse(tmp_path, model):
    path = write_csv(tmp_path / "s.csv")
    overrides = {"data": str(path), "target": "wave", **TINY}
    if model != "tcn":
        overrides = {k: v for k, v in overrides.items() if k not in ("channels", "kernel_size")}
        overrides["hidden_size"] = "8"
    run = build_run("series", model, overrides, epochs=2)
    assert run.model.head.linear.out_features == 1 and run.model.body.in_channels == 2
    r = Trainer(run.task, run.model, run.datasets, run.spec.train, quiet=True).fit()
    assert math.isfinite(r.test["mse"]) and r.test["mse"] == pytest.approx(r.test["loss"])


def test_series_needs_a_csv_and_sane_settings(tmp_path):
    with pytest.raises(ValueError, match="needs a CSV file: pass --data PATH"):
        build_run("series", "tcn", {})
    path = write_csv(tmp_path / "s.csv")
    with pytest.raises(ValueError, match="valid_len <= seq_len"):
        build_run("series", "tcn", {"data": str(path), "seq_len": "8", "valid_len": "9"})
    with pytest.raises(ValueError, match="horizon must be an int >= 1"):
        build_run("series", "tcn", {"data": str(path), "horizon": "0"})
    with pytest.raises(ValueError, match="no forecast"):
        build_run("series", "tcn", {"data": str(path), "horizon": "150"})


# -- torchtcn forecast -------------------------------------------------------------------------
@pytest.mark.parametrize("all_horizons", [False, True])
def test_forecast_reproduces_the_test_score_in_data_units(tmp_path, capsys, all_horizons):
    import csv
    import json

    import torchtcn
    from torchtcn.cli import main

    path = write_csv(tmp_path / "s.csv")
    run_dir, results = tmp_path / "run", tmp_path / "results"
    settings = [f"{k}={v}" for k, v in TINY.items()]  # receptive field 7 < 14 steps of context
    assert main(["train", "series", "--data", str(path), "target=wave", "horizon=2", *settings,
                 f"all_horizons={all_horizons}",
                 "--epochs", "2", "--out", str(run_dir), "--results-dir", str(results),
                 "--quiet"]) == 0
    test_mse = json.loads((results / "series-tcn.json").read_text())["value"]

    # the same columns in another order, plus one the model never saw
    rows = list(csv.reader(path.open()))
    reordered = tmp_path / "reordered.csv"
    reordered.write_text("\n".join(f"{r[2]},{r[1]},{i}" for i, r in enumerate(rows)) + "\n")
    reordered.write_text(reordered.read_text().replace("wave,step,0", "wave,step,extra", 1))
    out = tmp_path / "f.csv"
    assert main(["forecast", str(run_dir), "--data", str(reordered), "--out", str(out)]) == 0
    table = list(csv.DictReader(out.open()))
    assert len(table) == 200 and table[-1]["forecast_row"] == "201"  # the last two: the future
    wave = torch.tensor([float(r[2]) for r in rows[1:]])
    train_std = wave[:140].std(unbiased=False)
    columns = {"wave+1": 1, "wave+2": 2} if all_horizons else {"wave": 2}
    assert list(table[0]) == ["input_row", "forecast_row", *columns]
    err = [(float(r[name]) - wave[int(r["input_row"]) + k]) / train_std
           for r in table if 160 <= int(r["forecast_row"]) < 200 for name, k in columns.items()]
    assert len(err) == 40 * len(columns)
    assert torch.stack(err).square().mean().item() == pytest.approx(test_mse, rel=1e-4)

    # Monte Carlo dropout: a mean and a standard deviation per column, reproducible by seed
    sampled = [tmp_path / "mc1.csv", tmp_path / "mc2.csv"]
    for f in sampled:
        assert main(["forecast", str(run_dir), "--data", str(path), "--out", str(f),
                     "--samples", "8", "--seed", "3"]) == 0
    assert sampled[0].read_text() == sampled[1].read_text()
    mc = list(csv.DictReader(sampled[0].open()))
    assert list(mc[0]) == ["input_row", "forecast_row",
                           *(n for name in columns for n in (name, f"{name}_std"))]
    first = next(iter(columns))
    assert all(float(r[f"{first}_std"]) >= 0 for r in mc)
    assert any(float(r[f"{first}_std"]) > 0 for r in mc)  # the preset's dropout samples

    plain = tmp_path / "plain.safetensors"
    torchtcn.save(torchtcn.TCN(2, [4]), plain)
    assert main(["forecast", str(plain), "--data", str(path)]) == 2
    assert "was not trained on the series task" in capsys.readouterr().err
    short = tmp_path / "short.csv"
    short.write_text("step,other\n1,2\n3,4\n5,6\n")
    assert main(["forecast", str(run_dir), "--data", str(short)]) == 2
    assert "lacks the columns ['wave']" in capsys.readouterr().err
