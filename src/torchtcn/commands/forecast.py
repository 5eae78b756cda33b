"""``torchtcn forecast MODEL --data FILE.csv``: forecasts of a model trained on the ``series``
task, for every row of a CSV with the same columns, in the data's own units.

Output (CSV, to ``--out`` or stdout): ``input_row`` (0-based data row the forecast is made
at), ``forecast_row`` (the row it is for: ``input_row + horizon``; rows past the end of the
file are the future), then one column per target (a model trained with ``all_horizons``:
``NAME+k`` for every step k = 1..horizon). Each forecast sees only rows up to its
``input_row``: the model is causal, and one non-causal is refused. ``--samples N`` runs N
Monte Carlo dropout passes (:func:`torchtcn.mc_predict`): each column is then their mean,
followed by a ``_std`` column with their standard deviation, an uncertainty in data units.

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
    return model, stats


def forecast(model: torch.nn.Module, stats: dict, values: torch.Tensor,
             samples: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Forecasts (T, D) in data units from ``values`` (T, C): row t holds the forecasts of
    the targets at rows ``t + k`` (k in ``stats["steps"]``, step-major) made from rows
    ``0..t``. With ``samples``: the mean of that many Monte Carlo dropout passes, and their
    standard deviation (else None)."""
    from ..uncertainty import mc_predict

    mean = torch.tensor(stats["mean"], dtype=torch.float32)
    std = torch.tensor(stats["std"], dtype=torch.float32)
    target = [stats["columns"].index(name) for name in stats["target"]] * len(stats["steps"])
    x = ((values - mean) / std).T.unsqueeze(0)  # (1, C, T)
    if getattr(model.body, "layout", "NCL") == "NLC":
        x = x.transpose(1, 2)
    p = next(model.parameters())
    x = x.to(p.device, p.dtype)
    spread = None
    with torch.no_grad():
        if samples is None:
            y = model.eval()(x)
        else:
            y, spread = mc_predict(model.eval(), x, samples=samples)
            spread = spread[0].T.float().cpu() * std[target]
    y = y[0].T.float().cpu()  # (T, D) normalised
    return y * std[target] + mean[target], spread


def run(args: argparse.Namespace) -> int:
    from ..data.series import load_series_csv

    model, stats = load_forecaster(args.model)
    series = load_series_csv(args.data)
    missing = [c for c in stats["columns"] if c not in series.columns]
    if missing:
        raise ValueError(f"{args.data} lacks the columns {missing} the model was trained on "
                         f"({stats['columns']})")
    values = series.values[:, [series.columns.index(c) for c in stats["columns"]]]
    torch.manual_seed(args.seed)
    predicted, spread = forecast(model, stats, values, args.samples)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    horizon, steps = stats["horizon"], stats["steps"]
    names = stats["target"] if steps == [horizon] else [
        f"{name}+{k}" for k in steps for name in stats["target"]]
    if spread is not None:  # each mean column followed by its standard deviation
        names = [n for name in names for n in (name, f"{name}_std")]
        predicted = torch.stack([predicted, spread], 2).flatten(1)
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
