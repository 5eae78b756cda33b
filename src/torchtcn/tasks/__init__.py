"""Task registry: the Bai et al. (2018) benchmark tasks (and user-data variants) by name.

Each family lives in its own module and registers its tasks with the paper's settings as
the preset: ``synthetic`` (adding problem, copy memory), ``mnist`` (sequential and permuted
MNIST), ``music`` (JSB Chorales, Nottingham, any piano-roll ``.mat``), ``language`` (char and
word PTB, user text files, text8, Wikitext-103, LAMBADA), and ``series`` (forecasting any
CSV time series).

Example:
    >>> from torchtcn.tasks import available_tasks, get_task
    >>> "jsb" in available_tasks()
    True
    >>> get_task("jsb").metric
    'nll_per_frame'
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from torch import nn

from .base import ArrayDataset, Paper, RunSpec, Task, parse_value

logger = logging.getLogger(__name__)

_TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    """Add ``task`` to the registry under ``task.name``."""
    if task.name in _TASKS and _TASKS[task.name] is not task:
        raise ValueError(f"a task named {task.name!r} is already registered")
    _TASKS[task.name] = task
    return task


def available_tasks() -> list[str]:
    """Registered task names (the ``torchtcn train TASK`` choices)."""
    return sorted(_TASKS)


def get_task(name: str) -> Task:
    """The task registered as ``name``; ``ValueError`` listing the valid names otherwise."""
    if name not in _TASKS:
        raise ValueError(f"unknown task {name!r}; available: {', '.join(available_tasks())}")
    return _TASKS[name]


@dataclass
class Run:
    """A task with its resolved settings, loaded datasets and freshly built model."""

    task: Task
    spec: RunSpec
    datasets: dict[str, Any]
    model: nn.Module


def build_run(task: str, model: str, overrides: dict[str, str] | None = None, *,
              data_dir=None, seed_first: bool = True, **train_overrides) -> Run:
    """Resolve settings, seed every RNG, load the data and build the model.

    The one place that turns ``torchtcn train TASK --model M key=value`` into objects; the
    demo and the tests go through it too.

    Args:
        task, model: registered names.
        overrides: ``{"key": "value"}`` (strings are parsed to the setting's type).
        data_dir: data directory (default: ``$TORCHTCN_DATA`` or ``../shared/data``).
        seed_first: seed torch/numpy/python with the run's seed before building the model,
            so the initial weights depend only on the seed.
        train_overrides: typed trainer settings (``epochs=3``, ``seed=1``, ...).
    """
    from ..train import seed_everything

    t = get_task(task)
    spec = t.resolve(model, overrides, **train_overrides)
    datasets = t.load(spec, data_dir)
    if seed_first:
        seed_everything(spec.train.seed)
    return Run(t, spec, datasets, t.build_model(spec, datasets))


# Importing the families registers their tasks.
from . import language, mnist, music, series, synthetic  # noqa: E402,F401

__all__ = ["Task", "Paper", "RunSpec", "Run", "ArrayDataset", "register_task", "available_tasks",
           "get_task", "build_run", "parse_value"]
