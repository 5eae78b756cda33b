"""What a task is: data, a head, a loss and a metric, with the paper's settings as its preset.

A :class:`Task` knows nothing about the training loop, and the loop (``torchtcn.train``)
knows nothing about any task: the loop asks the task for its datasets (:meth:`Task.load`),
for a model (:meth:`Task.build_model`) and, for every batch, for a loss and summed totals
(:meth:`Task.step`); the task turns totals into its metric (:meth:`Task.metric`).

Datasets are anything with ``len()`` and ``batch(indices) -> batch``; the loop draws the
indices (seeded, shardable), so data order is reproducible and independent of the task.

Settings are resolved in three layers, later ones winning: the trainer defaults
(:class:`~torchtcn.train.TrainConfig`), the task preset (paper Table 2 for the TCN, Table 3
or our size-matched choice for LSTM/GRU/RNN), and ``key=value`` overrides from the user,
checked against the keys that exist (:meth:`Task.resolve`).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import metrics as M
from ..commands.config_args import parse_int_list
from ..heads import LanguageModel, SequenceModel
from ..registry import available_models, create_model, get_model_class
from ..train import TrainConfig

#: Keys of a language model's wrapper that can be overridden besides the body's config.
# Model arguments a task's data fixes: the input width, and (as no task has a vector per
# sequence to condition on) cond_channels.
_DATA_FIXED_KEYS = ("in_channels", "cond_channels")
LM_KEYS = {"emsize": int, "tie_weights": bool, "embed_dropout": float}
LM_HELP = {"emsize": "embedding width (the body's input channels)",
           "tie_weights": "decoder shares the embedding's weights",
           "embed_dropout": "dropout on the embeddings"}


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines a run, as plain values (stored in checkpoints and results).

    Attributes:
        task: registered task name.
        model: registered body name (tcn, lstm, gru, rnn).
        train: the trainer settings.
        data: the task's data settings (sequence length, data seeds, ...).
        model_kwargs: the body's constructor arguments (plus ``emsize`` etc. for LMs).
    """

    task: str
    model: str
    train: TrainConfig
    data: dict[str, Any]
    model_kwargs: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "model": self.model,
            "train": dataclasses.asdict(self.train),
            "data": dict(self.data),
            "model_kwargs": {k: list(v) if isinstance(v, tuple) else v for k, v in self.model_kwargs.items()},
        }


@dataclass(frozen=True)
class Paper:
    """The paper's Table 1 row for a task: the four models' numbers and the model size."""

    tcn: float | None = None
    lstm: float | None = None
    gru: float | None = None
    rnn: float | None = None
    size: str = ""
    note: str = ""

    def get(self, model: str) -> float | None:
        return getattr(self, model, None)


# --------------------------------------------------------------------------- override parsing


def _parse_bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true/false, got {text!r}")


def parse_value(key: str, text: str, tp: Any) -> Any:
    """Convert an override's text to the type ``tp`` of the setting it changes.

    Handles int, float, bool, str, ``X | None`` (``none``/``null`` give None) and tuples of
    ints (``25,25,25`` or ``25*8``).

    Example:
        >>> parse_value("channels", "25*3", tuple[int, ...])
        (25, 25, 25)
        >>> parse_value("clip", "none", float | None)
    """
    if not isinstance(text, str):
        return text
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if type(None) in typing.get_args(tp):
        if text.lower() in ("none", "null", ""):
            return None
        tp = args[0] if len(args) == 1 else args
    try:
        if typing.get_origin(tp) is tuple or tp is tuple:
            return parse_int_list(text)
        if tp is bool:
            return _parse_bool(text)
        if tp is int:
            return int(text)
        if tp is float:
            value = float(text)
            if math.isnan(value):
                raise ValueError("NaN is not a valid setting")
            return value
        if tp is str:
            return text
    except ValueError as e:
        raise ValueError(f"{key}={text!r}: expected {getattr(tp, '__name__', tp)} ({e})") from None
    raise TypeError(f"{key}: no parser for settings of type {tp!r}")


#: Data settings whose preset is a number but which also take ``none`` (their help says so).
NULLABLE_DATA_KEYS = frozenset({"passage_len", "max_train_files"})


def _parse_data_value(key: str, text: Any, default: Any) -> Any:
    """Parse a data setting to the type of its preset value (None: an int, a path or none)."""
    if not isinstance(text, str):
        return text
    if key in NULLABLE_DATA_KEYS and text.lower() in ("none", "null"):
        return None
    if default is None:
        if text.lower() in ("none", "null", ""):
            return None
        try:
            return int(text)
        except ValueError:
            return text
    if isinstance(default, bool):
        return parse_value(key, text, bool)
    if isinstance(default, (tuple, list)):
        return parse_value(key, text, tuple[int, ...])
    return parse_value(key, text, type(default))


# --------------------------------------------------------------------------- the task

#: One line per data setting, for ``--show-settings``: a key means the same in every task
#: that has it (``tests/test_tasks.py`` checks that every preset key is described here).
DATA_HELP: dict[str, str] = {
    "T": "sequence length (adding) or blank steps between digits and recall (copy)",
    "n_train": "training sequences generated",
    "n_valid": "validation examples (MNIST: the last n_valid training images)",
    "n_test": "test sequences generated",
    "data_seed": "seed of the generated data (train, valid, test use it, +1, +2)",
    "placement": "adding marks: anywhere (reference code) | halves (one in each half)",
    "copy_len": "digits to memorise and recall",
    "perm_seed": "seed of the fixed pixel permutation",
    "data": "data file or folder (a name under the data directory, or a path)",
    "loss_reduction": "training loss: mean over frames | sum (the reference script's per piece)",
    "seq_len": "steps (tokens, time steps) per training/evaluation window",
    "valid_len": "last steps of each window that are scored (the rest is context)",
    "target": "CSV columns to forecast, comma-separated (None: every numeric column)",
    "horizon": "forecast the target this many steps after each input step",
    "all_horizons": "forecast every step 1..horizon ahead at once (direct multi-horizon)",
    "likelihood": "none (point forecast, MSE) | gaussian (mean and std, Gaussian NLL) | "
                  "quantile (the quantiles levels, pinball loss)",
    "quantiles": "levels of a quantile forecast, comma-separated (the median is always added)",
    "stride": "steps between the ends of consecutive training windows",
    "valid_fraction": "last part of the series before the test part used for validation",
    "test_fraction": "last part of the series used for testing",
    "split_sizes": "characters in train, valid, test (consecutive from the start)",
    "passage_len": "LAMBADA context tokens kept before the last word (None: all)",
    "max_train_files": "read only the first N training novels (None: all)",
}


# Settings every task's preset of a model starts from. The paper's reference code trained its
# TCNs' weight-normed convolutions with PyTorch's default (Kaiming-uniform) init, because weight
# norm silently discarded its N(0, 0.01) init (locuslab/TCN #1); only its un-normed 1x1
# residual convolutions kept N(0, 0.01) (``init_scope="downsample"``, which on JSB was worse on
# validation: 8.177 against 8.143). torchtcn applies init_std for real, and the paper's 0.01
# measurably hurts: adding T=200, 3,000 Adam steps, test MSE 0.171 (still at the 0.167 plateau)
# with init_std=0.01 against 0.004 with the default init; JSB test NLL 8.233 against 8.211.
# So the benchmark presets use the init the paper's numbers were obtained with.
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {"tcn": {"init_std": None}}


@dataclass
class Task:
    """A benchmark task. Subclasses implement :meth:`load`, :meth:`build_model`, :meth:`step`.

    Attributes:
        name: registry name (``torchtcn train NAME``).
        description: one line for ``--help`` and reports.
        metric: the reported metric (a name known to :mod:`torchtcn.metrics`).
        paper: Table 1 of Bai et al. (2018) for this task.
        train_preset: trainer settings of the paper for every model, e.g. ``{"lr": 2e-3}``.
        data_preset: data settings (defaults the user can override with ``key=value``).
        model_presets: per model name, the body's arguments, plus ``"train"`` for settings
            that differ from ``train_preset`` for that model (Table 3).
        shuffle: draw training examples in a fresh seeded order every epoch.
        needs_data: a real data set is read (synthetic tasks: False).
        report_last_k: also report the mean test metric of the last k epochs (the paper's
            adding-problem number; locuslab/TCN issue #40).
        downloads: the :mod:`torchtcn.data.download` data sets the task's default data comes
            from (``torchtcn download TASK``, ``torchtcn train TASK --download``).
        predicts_ahead: the output at step t is scored against later inputs (next frame,
            next token, a forecast): a non-causal body would read its own targets, so
            ``causal=false`` is refused.
    """

    name: str
    description: str
    metric: str
    paper: Paper = field(default_factory=Paper)
    train_preset: dict[str, Any] = field(default_factory=dict)
    data_preset: dict[str, Any] = field(default_factory=dict)
    model_presets: dict[str, dict[str, Any]] = field(default_factory=dict)
    shuffle: bool = True
    needs_data: bool = True
    report_last_k: int | None = None
    downloads: tuple[str, ...] = ()
    predicts_ahead: bool = False

    def downloads_for(self, data: dict[str, Any]) -> tuple[str, ...]:
        """The data sets to download for the data settings ``data`` (none for a user's own
        ``data`` path)."""
        return self.downloads if data.get("data") is None else ()

    @property
    def default_downloads(self) -> tuple[str, ...]:
        """The data sets to download for the preset's data settings."""
        return self.downloads_for(dict(self.data_preset))

    @property
    def higher_is_better(self) -> bool:
        return M.higher_is_better(self.metric)

    # -- settings -------------------------------------------------------------------------
    def model_keys(self, model: str) -> dict[str, Any]:
        """Settable model keys and their types for body ``model``."""
        cls = get_model_class(model)
        hints = typing.get_type_hints(cls.config_class)
        fields = dataclasses.fields(cls.config_class)
        # layout: a task's data is (N, C, T), the body is fed that way; a key the body class
        # does not use (a GRU's forget_bias) is not offered
        unused = getattr(cls, "unused_config_keys", ())
        return {f.name: hints[f.name] for f in fields
                if f.name not in _DATA_FIXED_KEYS and f.name != "layout" and f.name not in unused}

    def model_help(self, model: str) -> dict[str, str]:
        """One line of help per settable model key (from the config's field metadata).

        Example:
            >>> from torchtcn.tasks import get_task
            >>> get_task("jsb").model_help("lstm")["hidden_size"]
            'hidden units per layer'
        """
        fields = dataclasses.fields(get_model_class(model).config_class)
        helps = {f.name: f.metadata.get("help", "") for f in fields}
        out = {k: helps.get(k, "") for k in self.model_keys(model)}
        if self.is_language_model:
            out.update(LM_HELP)
        return out

    def model_defaults(self, model: str) -> dict[str, Any]:
        """The default of every settable key of body ``model`` that has one (what a key the
        preset leaves unset builds with).

        Example:
            >>> from torchtcn.tasks import get_task
            >>> get_task("adding200").model_defaults("tcn")["norm"]
            'weight'
        """
        keys = self.model_keys(model)
        return {f.name: f.default for f in dataclasses.fields(get_model_class(model).config_class)
                if f.name in keys and f.default is not dataclasses.MISSING}

    def resolve(self, model: str, overrides: dict[str, str] | None = None, **train_overrides) -> RunSpec:
        """The run's settings: trainer defaults < task preset < model preset < overrides.

        Args:
            model: a registered body name.
            overrides: ``{"key": "value"}`` strings from the command line (or typed values).
            train_overrides: typed trainer settings set by flags (``epochs=``, ``seed=``, ...).

        Raises:
            ValueError: unknown model or key (the message lists the valid ones), or a value
                of the wrong type.
        """
        if model not in available_models():
            raise ValueError(f"unknown model {model!r} for task {self.name!r}; available: {available_models()}")
        preset = {**MODEL_DEFAULTS.get(model, {}), **self.model_presets.get(model, {})}
        train = {**self.train_preset, **preset.pop("train", {})}
        data = dict(self.data_preset)
        model_kwargs = dict(preset)
        train_hints = typing.get_type_hints(TrainConfig)
        model_types = self.model_keys(model)
        if self.is_language_model:
            model_types.update(LM_KEYS)
        for key, text in (overrides or {}).items():
            if key in train_hints:
                train[key] = parse_value(key, text, train_hints[key])
            elif key in data:
                data[key] = _parse_data_value(key, text, data[key])
            elif key in model_types:
                model_kwargs[key] = parse_value(key, text, model_types[key])
            else:
                raise ValueError(
                    f"unknown setting {key!r} for task {self.name!r} with model {model!r}; valid keys: "
                    f"trainer: {', '.join(sorted(train_hints))}; data: {', '.join(sorted(data)) or '-'}; "
                    f"model: {', '.join(sorted(model_types))}"
                )
        train.update({k: v for k, v in train_overrides.items() if v is not None})
        unknown = sorted(set(train) - set(train_hints))
        if unknown:
            raise ValueError(f"unknown trainer setting(s) {unknown}; valid: {sorted(train_hints)}")
        if self.predicts_ahead and model_kwargs.get("causal") is False:
            raise ValueError(f"task {self.name!r} scores each step's output against later "
                             "inputs: a non-causal model (causal=false) would read its own "
                             "targets; train it causal")
        _check_body_settings(model, model_kwargs)
        return RunSpec(self.name, model, TrainConfig(**train), data, model_kwargs)

    def stored_data_settings(self, stored: dict[str, Any]) -> dict[str, Any]:
        """The data settings of a run written earlier (a checkpoint's), with any setting added
        to the preset since then at its preset value: what those runs did before it existed.

        Example:
            >>> from torchtcn.tasks import get_task
            >>> get_task("jsb").stored_data_settings({"data": "JSB_Chorales"})["loss_reduction"]
            'mean'
        """
        return {**self.data_preset, **stored}

    @property
    def is_language_model(self) -> bool:
        return False

    def model_metadata(self, datasets: dict[str, Any]) -> dict[str, str]:
        """Strings stored with the trained model (``model.safetensors``' metadata) that using
        it outside the trainer needs, e.g. a forecast's normalisation. None by default."""
        return {}

    def data_signature(self, datasets: dict[str, Any]) -> dict[str, Any]:
        """What a trained model depends on in the loaded data beyond its settings, e.g. a
        language model's vocabulary (its ids). Checkpoints keep it; ``--resume`` and
        ``torchtcn eval`` refuse data that gives another (see
        :func:`torchtcn.train.signature_mismatch`). Empty by default: the settings fix the data."""
        return {}

    # -- to implement ---------------------------------------------------------------------
    def load(self, spec: RunSpec, data_dir=None) -> dict[str, Any]:
        """``{"train": ds, "valid": ds, "test": ds}``; each ``ds`` has ``len`` and ``batch(idx)``."""
        raise NotImplementedError

    def build_model(self, spec: RunSpec, datasets: dict[str, Any]) -> nn.Module:
        raise NotImplementedError

    def step(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        """``(mean loss to backpropagate, totals)`` for one batch; totals hold sums."""
        raise NotImplementedError

    def metric_value(self, totals: dict[str, float]) -> float:
        """The task's metric from a split's totals."""
        return M.compute(self.metric, totals)

    def extra_metrics(self, totals: dict[str, float]) -> dict[str, float]:
        """Other metrics worth recording (e.g. accuracy beside a loss)."""
        return {}


# --------------------------------------------------------------------------- shared pieces


def _check_body_settings(model: str, model_kwargs: dict[str, Any]) -> None:
    """Raise the body config's own ValueError/TypeError for a bad model setting now, before any
    data is read (``--show-settings`` included); its input width comes from the data later."""
    body = {k: v for k, v in model_kwargs.items() if k not in LM_KEYS}
    get_model_class(model).config_class(in_channels=model_kwargs.get("emsize", 1), **body)


class ArrayDataset:
    """Inputs and targets as two tensors indexed on dim 0: ``batch(idx) -> (x[idx], y[idx])``."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        if len(x) != len(y):
            raise ValueError(f"inputs and targets differ in length: {len(x)} vs {len(y)}")
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def batch(self, idx: torch.Tensor):
        return self.x[idx], self.y[idx]


def sequence_model(spec: RunSpec, in_channels: int, head: str, out_features: int) -> nn.Module:
    """``SequenceModel(create_model(spec.model, in_channels, **kwargs), head, out_features)``."""
    body = create_model(spec.model, in_channels=in_channels, **spec.model_kwargs)
    return SequenceModel(body, head=head, out_features=out_features)


def language_model(spec: RunSpec, vocab_size: int) -> nn.Module:
    """Embedding -> body -> (tied) decoder. The body's input width is ``emsize``."""
    kw = dict(spec.model_kwargs)
    emsize = kw.pop("emsize")
    tie = kw.pop("tie_weights", True)
    embed_dropout = kw.pop("embed_dropout", 0.0)
    body = create_model(spec.model, in_channels=emsize, **kw)
    return LanguageModel(body, vocab_size, tie_weights=tie, embed_dropout=embed_dropout)


def classification_totals(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Cross entropy (mean for backward) and summed totals with hits, for (N, K[, T]) logits."""
    loss_sum = F.cross_entropy(logits, target, reduction="sum")
    count = target.numel()
    correct = (logits.argmax(1) == target).sum().item()
    return loss_sum / count, {"loss": loss_sum.item(), "count": count, "correct": correct}
