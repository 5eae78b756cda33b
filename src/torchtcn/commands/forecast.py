"""``torchtcn forecast MODEL --data FILE.csv``: forecasts of a model trained on the ``series``
task, for every row of a CSV with the same columns, in the data's own units.

Output (CSV, to ``--out`` or stdout): ``input_row`` (0-based data row the forecast is made
at), ``forecast_row`` (the row it is for: ``input_row + horizon``; rows past the end of the
file are the future), then one column per target (a model trained with ``all_horizons``:
``NAME+k`` for every step k = 1..horizon). Each forecast sees only rows up to its
``input_row``: the model is causal, and one non-causal is refused.

A model trained with ``likelihood=gaussian`` writes each target's mean and a ``_std`` column
(its predictive standard deviation); one trained with ``likelihood=quantile`` writes a
``_qLEVEL`` column per quantile level (e.g. ``load_q0.1``). ``--samples N`` runs N Monte
Carlo dropout passes (:func:`torchtcn.mc_predict`): a point model's column is then their
mean, followed by a ``_std`` column with their standard deviation; a Gaussian model's mean is
their mean and its ``_std`` the standard deviation of the mixture of the N Gaussians (the
model's own spread plus the spread between passes). All in data units.

Example:
    torchtcn train series --data load.csv target=load horizon=24
    torchtcn forecast runs/series-tcn --data load.csv --out forecast.csv
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

import torch
from torch import nn

from ..likelihoods import Likelihood
from .train import add_threads_argument, torch_threads


def add_parser(sub) -> None:
    p = sub.add_parser(
        "forecast", help="forecast a CSV time series with a model trained on the series task",
        description="Write, for every row of a CSV with the columns MODEL was trained on "
                    "(torchtcn train series), the forecast made there for `horizon` rows later, "
                    "in the data's units.")
    p.add_argument("model", help="model.safetensors written by torchtcn train series, or its "
                                 "run folder")
    p.add_argument("--data", required=True, help="CSV with the columns the model was trained on")
    p.add_argument("--out", default=None, help="write the forecasts here (default: stdout)")
    p.add_argument("--samples", type=int, default=None,
                   help="Monte Carlo dropout passes: mean and standard deviation columns")
    p.add_argument("--seed", type=int, default=0, help="seed of the dropout samples")
    add_threads_argument(p)
    p.set_defaults(func=run)


def load_forecaster(path) -> tuple[torch.nn.Module, dict]:
    """The model at ``path`` (a file or run folder) and its series metadata (columns, target,
    horizon, mean, std).

    Raises:
        ValueError: the model was not trained on the series task, or is not causal.
    """
    from ..io import load, read_metadata
    from ..tasks.series import SERIES_METADATA_KEY

    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    meta = read_metadata(path)
    if SERIES_METADATA_KEY not in meta:
        raise ValueError(f"{path} was not trained on the series task (no {SERIES_METADATA_KEY!r} "
                         "metadata): torchtcn forecast needs `torchtcn train series` models")
    model = load(path)
    if getattr(model, "stream_delay", 0):
        raise ValueError(f"{path} is not causal (it sees {model.stream_delay} steps ahead): its "
                         "outputs would use rows after the one they forecast from")
    stats = json.loads(meta[SERIES_METADATA_KEY])
    stats.setdefault("steps", [stats["horizon"]])  # written before all_horizons existed
    stats.setdefault("likelihood", Likelihood().to_json())  # written before likelihoods
    return model, stats


class _GaussianMoments(nn.Module):
    """A Gaussian forecaster's outputs as ``cat([mean, variance], 1)``: averaged over Monte
    Carlo passes these give the mixture's mean and, with the means' spread, its variance."""

    def __init__(self, model: nn.Module, likelihood: Likelihood):
        super().__init__()
        self.model, self.likelihood = model, likelihood

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raw = self.model(x)
        return torch.cat([self.likelihood.point(raw), self.likelihood.std(raw).square()], 1)


def _normalised_forecasts(model: nn.Module, likelihood: Likelihood, x: torch.Tensor,
                          samples: int | None) -> list[tuple[str, torch.Tensor]]:
    """``[(suffix, (D, T) tensor)]`` in normalised units, one entry per column kind: ``""``
    a location (point, mean, quantile ``_qL``), ``"_std"`` a spread."""
    was_training = model.training
    model.eval()
    try:
        return _forecasts_in_eval_mode(model, likelihood, x, samples)
    finally:
        model.train(was_training)  # the caller's model comes back as it was given


def _forecasts_in_eval_mode(model: nn.Module, likelihood: Likelihood, x: torch.Tensor,
                            samples: int | None) -> list[tuple[str, torch.Tensor]]:
    from ..uncertainty import mc_predict

    if samples is None:
        raw = model(x)
        if likelihood.kind == "none":
            return [("", raw[0])]
        if likelihood.kind == "gaussian":
            return [("", likelihood.point(raw)[0]), ("_std", likelihood.std(raw)[0])]
        levels = likelihood.quantile_forecasts(raw)[0]  # (Q, D, T)
        # 15 significant digits: distinct levels keep distinct column names
        return [(f"_q{q:.15g}", level) for q, level in zip(likelihood.quantiles, levels)]
    if likelihood.kind == "none":
        mean, spread = mc_predict(model, x, samples=samples)
        return [("", mean[0]), ("_std", spread[0])]
    if likelihood.kind == "gaussian":
        moments, spread = mc_predict(_GaussianMoments(model, likelihood), x, samples=samples)
        d = moments.shape[1] // 2
        # law of total variance: E[var] + Var[mean] (mc_predict's spread is the sample std)
        std = (moments[0, d:] + spread[0, :d].square() * (samples - 1) / samples).sqrt()
        return [("", moments[0, :d]), ("_std", std)]
    raise ValueError("--samples applies to point and Gaussian models: a quantile model "
                     "already forecasts its spread (its _q columns)")


def forecast(model: nn.Module, stats: dict, values: torch.Tensor,
             samples: int | None = None) -> tuple[torch.Tensor, list[str]]:
    """Forecasts (T, K) in data units from ``values`` (T, C), and their K column names: row
    t holds the forecasts of the targets at rows ``t + k`` (k in ``stats["steps"]``,
    step-major) made from rows ``0..t``, each target's columns side by side (see the module
    docstring). With ``samples``: Monte Carlo dropout over that many passes."""
    columns = stats["columns"]
    if not isinstance(values, torch.Tensor) or values.dim() != 2 or values.shape[1] != len(columns):
        found = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
        raise ValueError(f"values must be (T, {len(columns)}) for the columns {columns}, got "
                         f"{'shape ' if isinstance(values, torch.Tensor) else ''}{found}")
    # float64, as in training: a large offset with a small variation survives normalising
    mean = torch.tensor(stats["mean"], dtype=torch.float64)
    std = torch.tensor(stats["std"], dtype=torch.float64)
    steps, horizon = stats["steps"], stats["horizon"]
    target = [stats["columns"].index(name) for name in stats["target"]] * len(steps)
    names = stats["target"] if steps == [horizon] else [
        f"{name}+{k}" for k in steps for name in stats["target"]]
    x = ((values.double() - mean) / std).T.unsqueeze(0)  # (1, C, T)
    if getattr(model.body, "layout", "NCL") == "NLC":
        x = x.transpose(1, 2)
    p = next(model.parameters())
    with torch.no_grad():
        parts = _normalised_forecasts(model, Likelihood.from_json(stats["likelihood"]),
                                      x.to(p.device, p.dtype), samples)
    columns = []
    for suffix, part in parts:  # (D, T) normalised -> (T, D) in data units
        part = part.T.double().cpu() * std[target]
        columns.append(part if suffix == "_std" else part + mean[target])
    table = torch.stack(columns, 2).flatten(1)  # (T, D * kinds): each target's side by side
    return table, [name + suffix for name in names for suffix, _ in parts]


def run(args: argparse.Namespace) -> int:
    with torch_threads(args.threads):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from ..data.series import load_series_csv

    model, stats = load_forecaster(args.model)
    series = load_series_csv(args.data)
    missing = [c for c in stats["columns"] if c not in series.columns]
    if missing:
        raise ValueError(f"{args.data} lacks the columns {missing} the model was trained on "
                         f"({stats['columns']})")
    values = series.values[:, [series.columns.index(c) for c in stats["columns"]]]
    torch.manual_seed(args.seed)
    predicted, names = forecast(model, stats, values, args.samples)
    horizon = stats["horizon"]
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["input_row", "forecast_row", *names])
    for t, row in enumerate(predicted.tolist()):
        writer.writerow([t, t + horizon, *(f"{v:.6g}" for v in row)])
    if args.out is None:
        sys.stdout.write(text.getvalue())
    else:
        Path(args.out).write_text(text.getvalue())
        print(f"wrote {len(predicted)} forecasts ({', '.join(stats['target'])}, {horizon} "
              f"step(s) ahead) to {args.out}", file=sys.stderr)
    return 0
