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
    bad.write_text("step,wave\n0,1\n")
    with pytest.raises(ValueError, match=r"at least 2 rows of values, found a header and 1 row\(s\)"):
        load_series_csv(bad)
    bad.write_text("\n\n")
    with pytest.raises(ValueError, match="found an empty file"):
        load_series_csv(bad)
    bad.write_text(",load,temp\n0,1,2\n1,3,4\n2,5,6\n")  # pandas' df.to_csv() with its index
    with pytest.raises(ValueError, match=r"column\(s\) \[1\] have no name.*index=False"):
        load_series_csv(bad)


def test_a_row_of_empty_cells_is_a_missing_step_not_dropped(tmp_path):
    bad = tmp_path / "gap.csv"
    bad.write_text("step,wave\n0,1.0\n,\n2,3.0\n\n\n")  # trailing blank lines are fine
    with pytest.raises(ValueError, match=r"column 'step' is numeric but row 3 holds ''"):
        load_series_csv(bad)


def test_a_small_variation_on_a_large_offset_survives_normalising(tmp_path):
    # float32 statistics would give std 0 and every input 192.0; float64 keeps the sine
    path = tmp_path / "offset.csv"
    path.write_text("t,x\n" + "".join(f"{i},{1e9 + math.sin(i / 5)!r}\n" for i in range(300)))
    train = build_run("series", "tcn", {"data": str(path), **TINY}).datasets["train"]
    x = train.x[1]
    assert x.std() > 0.5 and x.abs().max() < 3
    huge = tmp_path / "huge.csv"
    huge.write_text("t,x\n" + "".join(f"{i},{1e300 * (1 + i % 3)!r}\n" for i in range(300)))
    with pytest.raises(ValueError, match=r"columns \['x'\] hold values too large to normalise"):
        build_run("series", "tcn", {"data": str(huge), **TINY})  # a clear error, not NaN losses


def test_settings_that_would_break_a_forecast_are_refused(tmp_path):
    path = write_csv(tmp_path / "s.csv")
    with pytest.raises(ValueError, match="non-causal model .* would read its own targets"):
        build_run("series", "tcn", {"data": str(path), "causal": "false"})
    with pytest.raises(ValueError, match="unknown setting 'layout'"):
        build_run("series", "tcn", {"data": str(path), "layout": "NLC"})


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
    for f, threads in zip(sampled, ([], ["--threads", "1"])):  # same forecasts on one thread
        assert main(["forecast", str(run_dir), "--data", str(path), "--out", str(f),
                     "--samples", "8", "--seed", "3", *threads]) == 0
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


# -- probabilistic forecasts --------------------------------------------------------------------
def _train_series(tmp_path, path, name: str, settings: dict, epochs: int = 2):
    import json

    from torchtcn.cli import main

    run_dir, results = tmp_path / name, tmp_path / f"{name}-results"
    args = [f"{k}={v}" for k, v in settings.items()]
    assert main(["train", "series", "--data", str(path), *args, "--epochs", str(epochs),
                 "--out", str(run_dir), "--results-dir", str(results), "--quiet"]) == 0
    return run_dir, json.loads((results / "series-tcn.json").read_text())


def _forecast_table(path, run_dir, out, *extra):
    import csv

    from torchtcn.cli import main

    assert main(["forecast", str(run_dir), "--data", str(path), "--out", str(out), *extra]) == 0
    return list(csv.DictReader(out.open()))


@pytest.mark.parametrize("likelihood,columns,point", [
    ("gaussian", ["wave", "wave_std"], "wave"),
    ("quantile", ["wave_q0.05", "wave_q0.5", "wave_q0.95"], "wave_q0.5"),
])
def test_probabilistic_forecast_columns_and_its_point_reproduces_the_test_score(
        tmp_path, capsys, likelihood, columns, point):
    path = write_csv(tmp_path / "s.csv")
    settings = {**TINY, "target": "wave", "horizon": 2, "likelihood": likelihood,
                "quantiles": "0.95,0.05"}
    run_dir, result = _train_series(tmp_path, path, "run", settings)
    test = result["test"]
    assert test["mse"] == result["value"] and test["loss"] != pytest.approx(test["mse"])
    table = _forecast_table(path, run_dir, tmp_path / "f.csv")
    assert list(table[0]) == ["input_row", "forecast_row", *columns]
    wave = torch.tensor([float(line.split(",")[2]) for line in path.read_text().splitlines()[1:]])
    train_std = wave[:140].std(unbiased=False)
    scored = [r for r in table if 160 <= int(r["forecast_row"]) < 200]
    err = torch.tensor([(float(r[point]) - wave[int(r["forecast_row"])]) / train_std
                        for r in scored])
    assert err.square().mean().item() == pytest.approx(test["mse"], rel=1e-4)
    if likelihood == "gaussian":
        assert all(float(r["wave_std"]) > 0 for r in table)
    else:
        levels = torch.tensor([[float(r[c]) for c in columns] for r in table])
        assert (levels.diff(dim=1) >= 0).all()  # levels never cross
        from torchtcn.cli import main

        assert main(["forecast", str(run_dir), "--data", str(path), "--samples", "4"]) == 2
        assert "a quantile model already forecasts its spread" in capsys.readouterr().err


def test_gaussian_monte_carlo_spread_is_the_mixture_of_the_passes(tmp_path):
    path = write_csv(tmp_path / "s.csv")
    base = {**TINY, "target": "wave", "likelihood": "gaussian"}
    # without dropout every pass is the same Gaussian: the mixture is that Gaussian
    run_dir, _ = _train_series(tmp_path, path, "plain", {**base, "dropout": 0.0})
    plain = _forecast_table(path, run_dir, tmp_path / "p.csv")
    sampled = _forecast_table(path, run_dir, tmp_path / "s.csv2", "--samples", "5")
    for name in ("wave", "wave_std"):
        torch.testing.assert_close(torch.tensor([float(r[name]) for r in sampled]),
                                   torch.tensor([float(r[name]) for r in plain]),
                                   rtol=1e-4, atol=1e-6)
    # with dropout the passes differ, and the mixture is wider than the average pass
    run_dir, _ = _train_series(tmp_path, path, "dropout", {**base, "dropout": 0.3})
    one = _forecast_table(path, run_dir, tmp_path / "d1.csv", "--samples", "6", "--seed", "1")
    again = _forecast_table(path, run_dir, tmp_path / "d2.csv", "--samples", "6", "--seed", "1")
    assert one == again

    import torchtcn
    from torchtcn.commands.forecast import load_forecaster
    from torchtcn.data.series import load_series_csv
    from torchtcn.likelihoods import Likelihood

    model, stats = load_forecaster(run_dir)
    values = load_series_csv(path).values
    x = ((values - torch.tensor(stats["mean"], dtype=torch.float64))
         / torch.tensor(stats["std"], dtype=torch.float64)).T.unsqueeze(0).float()
    lik = Likelihood.from_json(stats["likelihood"])
    torch.manual_seed(1)
    with torch.no_grad(), torchtcn.mc_dropout(model):
        passes = [model(x) for _ in range(6)]
    means = torch.stack([lik.point(raw)[0, 0] for raw in passes])  # (6, T)
    variances = torch.stack([lik.std(raw)[0, 0].square() for raw in passes])
    mixture_std = (variances.mean(0) + means.var(0, unbiased=False)).sqrt()
    target_std = stats["std"][stats["columns"].index("wave")]
    torch.testing.assert_close(torch.tensor([float(r["wave_std"]) for r in one]),
                               mixture_std * target_std, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("likelihood", ["gaussian", "quantile"])
def test_probabilistic_forecasts_are_calibrated_on_noise_of_known_size(tmp_path, likelihood):
    # a periodic signal plus N(0, 0.3^2) noise: the model can learn the signal, never the
    # noise, so a calibrated forecast's 80% interval is about +-1.28 * 0.3 and covers 80%
    gen = torch.Generator().manual_seed(0)
    t = torch.arange(1000.0)
    wave = torch.sin(t / 4) + 0.3 * torch.randn(1000, generator=gen)
    path = tmp_path / "noisy.csv"
    path.write_text("phase,wave\n" + "".join(f"{int(i) % 50},{w:.5f}\n"
                                             for i, w in zip(t, wave.tolist())))
    settings = {"target": "wave", "likelihood": likelihood, "quantiles": "0.1,0.9",
                "channels": "16,16,16", "kernel_size": 3, "seq_len": 48, "valid_len": 24,
                "stride": 4, "dropout": 0.0}
    run_dir, _ = _train_series(tmp_path, path, "run", settings, epochs=20)
    table = _forecast_table(path, run_dir, tmp_path / "f.csv")
    test = [r for r in table if 800 <= int(r["forecast_row"]) < 1000]
    truth = torch.tensor([wave[int(r["forecast_row"])].item() for r in test])
    if likelihood == "gaussian":
        std = torch.tensor([float(r["wave_std"]) for r in test])
        mean = torch.tensor([float(r["wave"]) for r in test])
        assert 0.24 < std.mean().item() < 0.38
        low, high = mean - 1.2816 * std, mean + 1.2816 * std
    else:
        low = torch.tensor([float(r["wave_q0.1"]) for r in test])
        high = torch.tensor([float(r["wave_q0.9"]) for r in test])
        assert 0.6 < (high - low).mean().item() / (2 * 1.2816) / 0.3 < 1.3
    covered = ((truth >= low) & (truth <= high)).float().mean().item()
    assert 0.68 < covered < 0.92  # 200 targets: the binomial sd of 80% coverage is 0.028


def test_targets_typed_as_a_list_and_repeated_targets(tmp_path):
    path = write_csv(tmp_path / "s.csv", 60)
    settings = {"data": str(path), "seq_len": "24", "valid_len": "10"}
    run = build_run("series", "tcn", {**settings, "target": ["wave", "step"]})
    assert run.datasets["train"].normalisation["target"] == ["wave", "step"]
    assert build_run("series", "tcn", {**settings, "target": ("wave",)}).datasets[
        "train"].out_features == 1
    with pytest.raises(ValueError, match=r"target columns must be distinct, found \['wave'\]"):
        build_run("series", "tcn", {**settings, "target": "wave, wave"})
    with pytest.raises(TypeError, match="target must be column names"):
        build_run("series", "tcn", {**settings, "target": [1]})


def test_eval_refuses_a_csv_changed_since_training(tmp_path):
    from torchtcn.commands.eval import evaluate_checkpoint

    path = write_csv(tmp_path / "s.csv")
    run_dir, result = _train_series(tmp_path, path, "run", {**TINY, "target": "wave"}, epochs=1)
    assert evaluate_checkpoint(run_dir)["metrics"]["mse"] == pytest.approx(result["value"])
    original = path.read_text()
    lines = original.splitlines()
    swapped = [",".join([c[0], c[2], c[1]]) for c in (line.split(",") for line in lines)]
    for changed in ("\n".join(swapped) + "\n",            # columns reordered: permuted inputs
                    "\n".join(lines[:-50]) + "\n",        # rows removed: other splits
                    original.replace("0.", "0.0", 1)):      # one value edited
        path.write_text(changed)
        with pytest.raises(ValueError, match="data now differs from the data the model was "
                                             "trained on"):
            evaluate_checkpoint(run_dir)
    path.write_text(original)
    assert evaluate_checkpoint(run_dir)["metrics"]["mse"] == pytest.approx(result["value"])


def test_forecast_restores_the_mode_and_names_close_quantile_levels_apart(tmp_path):
    from torchtcn.commands.forecast import forecast, load_forecaster
    from torchtcn.data.series import load_series_csv

    path = write_csv(tmp_path / "s.csv")
    settings = {**TINY, "target": "wave", "likelihood": "quantile",
                "quantiles": "0.1234561,0.1234564"}
    run_dir, _ = _train_series(tmp_path, path, "run", settings, epochs=1)
    table = _forecast_table(path, run_dir, tmp_path / "f.csv")
    assert list(table[0])[2:] == ["wave_q0.1234561", "wave_q0.1234564", "wave_q0.5"]
    model, stats = load_forecaster(run_dir)
    values = load_series_csv(path).values  # the model's columns: step, wave
    for training in (True, False):
        model.train(training)
        forecast(model, stats, values)
        assert model.training is training
    with pytest.raises(ValueError, match=r"values must be \(T, 2\) for the columns \['step', "
                                         r"'wave'\], got shape \(200, 1\)"):
        forecast(model, stats, values[:, 1:])  # was broadcast against the two columns' statistics

