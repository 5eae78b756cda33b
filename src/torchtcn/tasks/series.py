"""Forecasting a user's time series: ``torchtcn train series --data FILE.csv``.

Every numeric column of the CSV is an input channel; the ``target`` columns (default: all)
are forecast ``horizon`` steps ahead, at every step, by a per-step head (with
``all_horizons=true``: every step 1..horizon ahead at once, the "direct multi-horizon"
forecast; targets ordered step-major). The series is split
in time (train, then valid, then test: ``valid_fraction``, ``test_fraction``) and every
column is normalised with the training part's mean and standard deviation, so the metric is
the MSE in those units (the convention of the forecasting literature).

``likelihood=gaussian`` forecasts a mean and a standard deviation per target, trained on the
Gaussian negative log-likelihood; ``likelihood=quantile`` forecasts the ``quantiles`` levels
(the median always among them), trained on the pinball loss (:mod:`torchtcn.likelihoods`).
The metric stays the MSE of the point forecast (mean or median), so every kind of model is
compared on the same number; ``loss`` is what the model was trained on.

Windows work as in the language models ("effective history"): each holds ``seq_len`` steps,
scores only its last ``valid_len`` forecasts, and the earlier steps are context, taken from
before the split where there is any (past inputs are known at forecast time; targets never
cross a split). In validation and test every target is scored exactly once, so their numbers
are those of the whole split whatever the batching; training windows end every ``stride``
steps, so they overlap and a short series still gives many of them.

Example:
    >>> import tempfile, os, math
    >>> path = os.path.join(tempfile.mkdtemp(), "s.csv")
    >>> _ = open(path, "w").write("a,b\\n" + "".join(
    ...     f"{math.sin(i / 5):.4f},{math.cos(i / 7):.4f}\\n" for i in range(300)))
    >>> from torchtcn.tasks import build_run
    >>> run = build_run("series", "tcn", {"data": path, "target": "a", "seq_len": "40",
    ...                                   "valid_len": "20"})
    >>> batch = run.datasets["valid"].batch(torch.arange(2))
    >>> tuple(batch.x.shape), tuple(batch.y.shape), int(batch.mask.sum())
    ((2, 2, 40), (2, 1, 40), 30)
"""

from __future__ import annotations

import hashlib
import json
from typing import NamedTuple

import torch

from .. import metrics as M
from ..data.series import SeriesData, chronological_split, load_series_csv
from ..likelihoods import Likelihood
from . import register_task
from .base import Paper, Task, sequence_model

#: ``model.safetensors`` metadata key of a series model's columns, target, horizon and
#: normalisation (JSON), read by ``torchtcn forecast``.
SERIES_METADATA_KEY = "torchtcn.series"


class SeriesBatch(NamedTuple):
    x: torch.Tensor  # (N, C, seq_len) normalised inputs
    y: torch.Tensor  # (N, D, seq_len) normalised targets (D: targets x forecast steps)
    mask: torch.Tensor  # (N, seq_len) 1 where a forecast is scored
    likelihood: Likelihood  # how the head's outputs describe the targets


class SeriesWindows:
    """Effective-history windows over one split of a normalised series.

    Args:
        x: (C, T') inputs, y: (D, T') the targets of each input step (``horizon`` later, or
            every step up to it).
        first, end: the input steps whose forecasts this split scores, ``[first, end)``.
        seq_len, valid_len: steps per window, and scored steps per window.
        stride: None for consecutive windows scoring every target once (evaluation);
            else a window ends every ``stride`` steps (training; they overlap when
            ``stride < valid_len``).
        normalisation: the columns, target, horizon and statistics a forecast needs.
        likelihood: what the model forecasts per target (a point by default).
        source_sha256: a digest of the series this split was cut from (its data signature).
    """

    def __init__(self, x, y, first: int, end: int, seq_len: int, valid_len: int,
                 stride: int | None = None, normalisation: dict | None = None,
                 likelihood: Likelihood = Likelihood(), source_sha256: str | None = None):
        if not 0 < valid_len <= seq_len:
            raise ValueError(f"need 0 < valid_len <= seq_len, got valid_len={valid_len}, "
                             f"seq_len={seq_len}")
        if stride is not None and (isinstance(stride, bool) or not isinstance(stride, int)
                                   or stride < 1):
            raise ValueError(f"stride must be an int >= 1, got {stride!r}")
        if end <= first:
            raise ValueError(f"this split scores no forecast (steps {first}..{end}): the series "
                             "is too short for its split fractions and horizon")
        self.x, self.y, self.seq_len = x, y, seq_len
        self.normalisation = normalisation  # columns, target, horizon, mean, std (JSON-able)
        self.likelihood = likelihood
        self.source_sha256 = source_sha256
        if stride is None:
            self.groups = [(g, min(g + valid_len, end)) for g in range(first, end, valid_len)]
        else:
            ends = [*range(min(first + valid_len, end), end, stride), end]
            self.groups = [(max(first, g1 - valid_len), g1) for g1 in ends]

    @property
    def in_channels(self) -> int:
        return self.x.shape[0]

    @property
    def out_features(self) -> int:
        return self.y.shape[0]

    def __len__(self) -> int:
        return len(self.groups)

    def batch(self, idx: torch.Tensor) -> SeriesBatch:
        n, length = len(idx), self.seq_len
        x = self.x.new_zeros(n, self.in_channels, length)
        y = self.y.new_zeros(n, self.out_features, length)
        mask = self.x.new_zeros(n, length)
        for row, i in enumerate(idx.tolist()):
            g0, g1 = self.groups[i]
            start = max(0, g1 - length)
            pad = length - (g1 - start)  # only the series' first window: left zero padding
            x[row, :, pad:] = self.x[:, start:g1]
            y[row, :, pad:] = self.y[:, start:g1]
            mask[row, length - (g1 - g0):] = 1.0
        return SeriesBatch(x, y, mask, self.likelihood)


def series_splits(series: SeriesData, data: dict) -> dict[str, SeriesWindows]:
    """Normalise ``series`` with its training part's statistics and cut the three splits."""
    values, horizon = series.values, data["horizon"]
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
        raise ValueError(f"horizon must be an int >= 1, got {horizon!r}")
    total = values.shape[0]
    valid_start, test_start = chronological_split(total, data["valid_fraction"],
                                                  data["test_fraction"])
    if horizon >= valid_start:
        raise ValueError(f"horizon={horizon} leaves no forecast to train on: the training part "
                         f"has {valid_start} steps")
    likelihood = Likelihood(data["likelihood"], data["quantiles"])
    train = values[:valid_start].double()
    mean, std = train.mean(0), train.std(0, unbiased=False)
    overflow = [c for c, m, v in zip(series.columns, mean, std)
                if not (m.isfinite() and v.isfinite())]
    if overflow:
        raise ValueError(f"columns {overflow} hold values too large to normalise (their training "
                         "mean or standard deviation overflows float64): rescale them")
    std = torch.where(std > 0, std, torch.ones_like(std))  # a constant column stays 0
    norm = ((values.double() - mean) / std).float()  # statistics in float64, windows float32
    steps = list(range(1, horizon + 1)) if data["all_horizons"] else [horizon]
    x = norm[: total - horizon].T.contiguous()  # input step t forecasts steps t + k
    y = torch.cat([norm[k : total - horizon + k, series.target_index] for k in steps], 1)
    y = y.T.contiguous()  # (len(steps) * D, T - horizon), step-major
    # A split owns the targets of its steps [a, b): inputs [a - horizon, b - horizon). Nearer
    # forecast steps may fall in the split before, never in a later one.
    bounds = {"train": (0, valid_start), "valid": (valid_start, test_start),
              "test": (test_start, total)}
    digest = hashlib.sha256(values.double().contiguous().numpy().tobytes()).hexdigest()
    digest = f"{tuple(values.shape)}:{digest}"
    stats = {"columns": series.columns, "target": series.target, "horizon": horizon,
             "steps": steps, "mean": mean.tolist(), "std": std.tolist(),
             "likelihood": likelihood.to_json()}
    return {
        name: SeriesWindows(x, y, max(0, a - horizon), b - horizon, data["seq_len"],
                            data["valid_len"], data["stride"] if name == "train" else None,
                            stats, likelihood, source_sha256=digest)
        for name, (a, b) in bounds.items()
    }


class SeriesTask(Task):
    """Forecast the target columns ``horizon`` steps ahead at every step; normalised MSE of
    the point forecast (totals: ``loss`` the training objective, ``se`` the squared error)."""

    def load(self, spec, data_dir=None):
        d = spec.data
        if d["data"] is None:
            raise ValueError(f"task {self.name!r} needs a CSV file: pass --data PATH (a header "
                             "row, then one row per time step, oldest first)")
        target = d["target"]
        if target is not None:  # "a,b" from the command line, or a list from Python
            names = target.split(",") if isinstance(target, str) else list(target)
            if not all(isinstance(t, str) for t in names):
                raise TypeError(f"target must be column names (a str 'a,b' or a list of str), "
                                f"got {target!r}")
            target = [t.strip() for t in names]
        return series_splits(load_series_csv(d["data"], target), d)

    def data_signature(self, datasets):
        # eval and --resume re-read the CSV: other rows, values or column order would feed the
        # model other inputs, or move the splits and the normalisation, without an error
        return {"columns": datasets["train"].normalisation["columns"],
                "values_sha256": datasets["train"].source_sha256}

    def build_model(self, spec, datasets):
        train = datasets["train"]
        return sequence_model(spec, in_channels=train.in_channels, head="per_step",
                              out_features=train.out_features * train.likelihood.params)

    def model_metadata(self, datasets):
        return {SERIES_METADATA_KEY: json.dumps(datasets["train"].normalisation)}

    def step(self, model, batch: SeriesBatch):
        raw, lik = model(batch.x), batch.likelihood
        # (N, L): summed over targets, then over the scored steps
        se = ((lik.point(raw) - batch.y).square().sum(1) * batch.mask).sum()
        # a point forecast trains on that squared error itself: no second pass over it
        total = se if lik.kind == "none" else (lik.loss(raw, batch.y).sum(1) * batch.mask).sum()
        count = batch.mask.sum() * batch.y.shape[1]
        return total / count, {"loss": total.item(), "se": se.item(), "count": count.item()}

    def metric_value(self, totals):
        return M.compute(self.metric, {"loss": totals["se"], "count": totals["count"]})


register_task(SeriesTask(
    name="series", predicts_ahead=True,
    description="any CSV time series (--data PATH): forecast target columns (normalised MSE)",
    metric="mse",
    paper=Paper(note="user data: no paper number"),
    train_preset={"epochs": 30, "batch_size": 32, "eval_batch_size": 64, "optimizer": "adam",
                  "lr": 2e-3, "clip": 1.0, "schedule": "cosine"},
    data_preset={"data": None, "target": None, "horizon": 1, "all_horizons": False,
                 "likelihood": "none", "quantiles": "0.1,0.5,0.9",
                 "seq_len": 384, "valid_len": 128, "stride": 8, "valid_fraction": 0.1,
                 "test_fraction": 0.2},
    # k=3, six blocks of 32: receptive field 253 steps. A window's first scored step has
    # seq_len - valid_len = 256 steps of past, so every scored step sees its whole receptive
    # field, as `torchtcn forecast` (which runs the whole series) does. The recurrent models
    # are sized to a similar parameter count for a few input columns.
    model_presets={"tcn": {"channels": (32,) * 6, "kernel_size": 3, "dropout": 0.1},
                   "lstm": {"hidden_size": 96}, "gru": {"hidden_size": 110},
                   "rnn": {"hidden_size": 190}},
))
