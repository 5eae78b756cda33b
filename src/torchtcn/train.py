"""The one training loop. It knows nothing about models or tasks (minGPT's ``Trainer``).

A *task* (``torchtcn.tasks``) supplies datasets, a model and, per batch, a loss and summed
totals; the :class:`Trainer` does everything else the same way for every task:

* seeded torch / numpy / Python RNG (:func:`seed_everything`) and a deterministic data order
  (a fresh ``torch.Generator`` seeded from ``(seed, epoch)`` every epoch);
* the optimizer and learning-rate schedule of the paper (Adam, RMSprop, or SGD; step,
  plateau, or the reference scripts' anneal-on-regression), gradient clipping *after*
  ``backward()`` (the reference code clipped freshly zeroed gradients, which does nothing);
* validation every epoch, atomic checkpoints (``last.ckpt`` every epoch and optionally every
  N steps, ``best.ckpt`` when validation improves) and ``resume`` that continues exactly as
  an uninterrupted run would (same weights, bit for bit on the CPU; on CUDA as far as cuDNN's
  kernels are deterministic);
* metrics to ``metrics.csv`` / ``metrics.jsonl`` (and TensorBoard when installed), progress
  bars with the live loss and metric, learning curves as PNG;
* optionally (``ema=0.999``) an exponential moving average of the weights
  (:class:`torchtcn.averaging.WeightEMA`), which is then what is validated, kept as the best
  model, tested and saved, while the raw weights go on training;
* a NaN/Inf loss stops the run with the step where it happened, without touching the best
  checkpoint; ``max_steps`` / ``time_limit`` stop it early (the result says ``complete=False``).

Distributed data parallel (``torch.distributed`` via :mod:`torchtcn.distributed`) goes
through four overridable places: :meth:`Trainer.wrap_model`, :meth:`Trainer.shard`,
:meth:`Trainer.reduce_totals` and :attr:`Trainer.is_main` (only the main process logs and
writes). With one process they are no-ops.

Example:
    >>> import torchtcn
    >>> from torchtcn.tasks import build_run
    >>> run = build_run("adding200", "tcn", {"n_train": "64", "n_valid": "32", "n_test": "32",
    ...                 "T": "20", "channels": "8,8", "kernel_size": "3"}, epochs=1)
    >>> result = Trainer(run.task, run.model, run.datasets, run.spec.train, quiet=True).fit()
    >>> result.epochs, result.complete
    (1, True)
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import platform
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import distributed as D
from . import metrics as M
from .averaging import WeightEMA
from .interrupt import GracefulStop
from .schedules import AnnealOnRegression, CosineOverEpochs

logger = logging.getLogger(__name__)

OPTIMIZERS = ("adam", "rmsprop", "sgd")
SCHEDULES = ("none", "step", "plateau", "regress", "cosine")
#: How an early-stop reason starts: such a run ended by its own rule, so it is complete.
EARLY_STOP = "early stop"
#: Settings that may change when a run is resumed: limits and stopping rules, which do not change
#: the steps already taken (with schedule=cosine a new ``epochs`` reshapes the remaining lr).
RESUMABLE_CHANGES = ("epochs", "max_steps", "time_limit", "device", "checkpoint_every", "early_stop",
                     "min_lr")


@dataclass(frozen=True)
class TrainConfig:
    """Trainer settings (the task presets set the paper's values; ``key=value`` overrides them)."""

    epochs: int = field(default=10, metadata={"help": "passes over the training set"})
    batch_size: int = field(default=32, metadata={"help": "examples per step (LMs: streams)"})
    eval_batch_size: int | None = field(default=None, metadata={"help": "default batch_size"})
    optimizer: str = field(default="adam", metadata={"help": "adam | rmsprop | sgd"})
    lr: float = field(default=2e-3, metadata={"help": "learning rate"})
    momentum: float = field(default=0.0, metadata={"help": "SGD / RMSprop momentum"})
    weight_decay: float = field(default=0.0, metadata={"help": "L2 penalty"})
    clip: float | None = field(default=None, metadata={"help": "max gradient norm (none: off)"})
    ema: float | None = field(default=None, metadata={
        "help": "decay of an exponential moving average of the weights, which validation, the "
                "best checkpoint and model.safetensors then use (e.g. 0.999; the decay of step n is "
                "min(ema, (1+n)/(10+n)), a warm-up that caps 0.999 for 9,000 steps); none: off"})
    schedule: str = field(default="none", metadata={
        "help": "none | step | plateau | regress (the reference code's: anneal when valid is worse "
                "than all of the last lr_window epochs, after lr_after epochs) | cosine (from lr "
                "towards 0 over the run's epochs, set once per epoch)"})
    lr_factor: float = field(default=0.1, metadata={"help": "lr multiplier when annealing"})
    lr_step: int = field(default=10, metadata={"help": "step schedule: epochs between anneals"})
    lr_patience: int = field(default=0, metadata={"help": "plateau: epochs without improvement"})
    lr_window: int = field(default=3, metadata={"help": "regress: epochs the new value is compared with"})
    lr_after: int = field(default=10, metadata={"help": "regress: epochs before annealing may start"})
    lr_on_tie: bool = field(default=False, metadata={
        "help": "regress: also anneal when valid equals the worst of the window (the word-level "
                "reference scripts' >=)"})
    early_stop: int | None = field(default=None, metadata={
        "help": "end the run (complete) after this many epochs without a better validation metric"})
    min_lr: float | None = field(default=None, metadata={
        "help": "end the run (complete) once annealing has taken the lr below this"})
    seed: int = field(default=1111, metadata={"help": "seed of every RNG and the data order"})
    max_steps: int | None = field(default=None, metadata={"help": "stop after this many steps"})
    time_limit: float | None = field(default=None, metadata={"help": "stop after this many seconds"})
    checkpoint_every: int | None = field(default=None, metadata={"help": "also checkpoint every N steps"})
    test_every_epoch: bool = field(default=False, metadata={"help": "evaluate test each epoch too"})
    device: str = field(default="auto", metadata={"help": "cpu | cuda | auto"})

    def __post_init__(self):
        for name in ("lr_on_tie", "test_every_epoch"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")
        for name in ("epochs", "batch_size", "lr_step", "lr_window"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        for name in ("eval_batch_size", "max_steps", "checkpoint_every", "early_stop"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"{name} must be a positive int or None, got {v!r}")
        for name in ("lr_after", "lr_patience"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
            # (each epoch's data order is seeded from seed * 1_000_003 + epoch, within int64)
            raise ValueError(f"seed must be an int in [0, 2**32), got {self.seed!r}")
        for name in ("momentum", "weight_decay"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if not 0.0 < self.lr_factor < 1.0:
            raise ValueError(f"lr_factor must be in (0, 1), got {self.lr_factor!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {list(SCHEDULES)}, got {self.schedule!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if self.clip is not None and not self.clip > 0:
            raise ValueError(f"clip must be > 0 or None, got {self.clip!r}")
        if self.ema is not None and (isinstance(self.ema, bool) or not 0.0 < self.ema < 1.0):
            raise ValueError(f"ema must be a decay in (0, 1) or None, got {self.ema!r}")
        if self.min_lr is not None and not (self.min_lr > 0 and math.isfinite(self.min_lr)):
            raise ValueError(f"min_lr must be a positive number or None, got {self.min_lr!r}")
        if self.time_limit is not None and not self.time_limit > 0:
            raise ValueError(f"time_limit must be > 0 seconds or None, got {self.time_limit!r}")
        if self.device not in ("cpu", "cuda", "auto") and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be cpu, cuda, cuda:N or auto, got {self.device!r}")


@dataclass
class FitResult:
    """What a run produced.

    Attributes:
        epochs: completed epochs. steps: optimizer steps taken (all sessions of a resumed run).
        complete: False when stopped by ``max_steps``, ``time_limit``, a signal or a non-finite
            loss. Early stopping (``early_stop``, ``min_lr``) ends a run complete.
        stop_reason: why it stopped before ``config.epochs`` (None when it ran them all).
        best_valid / best_epoch: the best validation metric and its epoch.
        test: metrics of the best-validation model on the test split (``{"metric": ..}``).
        test_history: per-epoch test metric (with ``test_every_epoch``).
        history: one record per epoch (train/valid/test metrics, lr, seconds).
        wall_seconds: training time over all sessions.
    """

    epochs: int
    steps: int
    complete: bool
    stop_reason: str | None
    best_valid: float | None
    best_epoch: int | None
    test: dict[str, float]
    test_history: list[float]
    history: list[dict[str, Any]]
    wall_seconds: float


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or Inf."""


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, numpy's global RNG and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cuda"`` without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available; use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}") from None


def hardware_description(device: torch.device) -> str:
    """A one-line description of what ran the job (CPU model and threads, or the GPU)."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA)"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    threads = torch.get_num_threads()
    return f"{cpu}, {os.cpu_count()} cores, {threads} torch thread{'' if threads == 1 else 's'}"


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor of a (possibly nested) batch to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # NamedTuple
        return type(batch)(*(to_device(b, device) for b in batch))
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


def _progress(total: int, initial: int, desc: str, quiet: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, leave=False, dynamic_ncols=True,
                disable=quiet or not sys.stderr.isatty())


class Trainer:
    """Fit a model on a task's datasets. Model- and task-agnostic.

    Args:
        task: a :class:`torchtcn.tasks.Task` (``step``, ``metric``, ``metric_value``...).
        model: any ``nn.Module`` the task can run (moved to the device here).
        datasets: ``{"train", "valid", "test"}`` objects with ``len()`` and ``batch(idx)``.
        config: :class:`TrainConfig`.
        out_dir: run folder for checkpoints, metrics and plots; None writes nothing.
        run_info: JSON description of the run (stored in checkpoints; a resume must match it).
        ctx: a :class:`torchtcn.distributed.DistributedContext` (default: one process).
        quiet: no progress bars.
    """

    def __init__(self, task, model: nn.Module, datasets: dict[str, Any], config: TrainConfig,
                 out_dir=None, *, run_info: dict[str, Any] | None = None,
                 ctx: D.DistributedContext | None = None, quiet: bool = False,
                 use_tensorboard: bool = True):
        self.task, self.datasets, self.config = task, datasets, config
        for split, ds in datasets.items():  # caught here, not as a KeyError after an epoch
            if len(ds) == 0:
                raise ValueError(f"the {split} split is empty (0 examples): nothing to "
                                 f"{'train on' if split == 'train' else 'evaluate'}")
        self.ctx = ctx or D.DistributedContext(device=resolve_device(config.device))
        self.device = self.ctx.device
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.run_info = run_info or {}
        self.data_signature = task.data_signature(datasets)  # e.g. an LM's vocabulary
        self.quiet = quiet
        D.check_batch_size(config.batch_size, self.ctx)
        self.model = model.to(self.device)
        self.train_model = self.wrap_model(self.model)
        self.ema = WeightEMA(self.model, config.ema) if config.ema is not None else None
        self.optimizer = self.configure_optimizer(self.model)
        self.scheduler = self.configure_scheduler(self.optimizer)
        self.state: dict[str, Any] = {"epoch": 0, "step": 0, "step_in_epoch": 0, "running": {},
                                      "best": None, "best_epoch": None, "history": [],
                                      "wall_seconds": 0.0, "epoch_seconds": 0.0}
        self._best_weights: dict[str, torch.Tensor] | None = None
        self._clock: tuple[float, float, float] | None = None  # see _tick
        self._stop: GracefulStop | None = None  # set while fit() runs
        self.writer = None
        if self.out_dir is not None:
            from .checkpoint import check_output_dir, estimate_checkpoint_bytes

            # Unwritable or full: fail now (on every process), before any work can be lost.
            # Room for last.ckpt, best.ckpt, an atomic write's temporary copy, model.safetensors.
            need = 4 * estimate_checkpoint_bytes(self.model, averaged=self.ema is not None)
            D.check_on_main(lambda: check_output_dir(self.out_dir, need), self.ctx)
            if self.is_main:
                self.writer = M.MetricsWriter(self.out_dir, use_tensorboard=use_tensorboard)

    @property
    def eval_model(self) -> nn.Module:
        """The weights that are validated, tested and saved: the weight average when
        ``config.ema`` is set, else the model being trained."""
        return self.ema.module if self.ema is not None else self.model

    # ------------------------------------------------------------------ overridable places
    @property
    def is_main(self) -> bool:
        """Only the main process logs, shows progress and writes files."""
        return self.ctx.is_main

    def wrap_model(self, model: nn.Module) -> nn.Module:
        """The module the training step runs (DDP under torchrun; ``model`` otherwise)."""
        return D.wrap_model(model, self.ctx)

    def shard(self, indices: torch.Tensor) -> torch.Tensor:
        """This process's part of a global batch of example indices."""
        return D.shard(indices, self.ctx)

    def reduce_totals(self, totals: dict[str, float]) -> dict[str, float]:
        """Sum totals over processes (identity for one process)."""
        if not self.ctx.enabled:
            return totals
        # a process may hold none of a split's examples (or none of a resumed epoch's
        # totals): its keys are empty, and the sum must still line up key by key
        keys = sorted(set().union(*D.gather_objects(sorted(totals), self.ctx)))
        values = torch.tensor([totals.get(k, 0.0) for k in keys], dtype=torch.float64)
        return dict(zip(keys, D.all_reduce_sum(values, self.ctx).tolist()))

    def configure_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        c = self.config
        params = model.parameters()
        if c.optimizer == "adam":
            return torch.optim.Adam(params, lr=c.lr, weight_decay=c.weight_decay)
        if c.optimizer == "rmsprop":
            return torch.optim.RMSprop(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)
        return torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)

    def configure_scheduler(self, optimizer: torch.optim.Optimizer):
        c = self.config
        if c.schedule == "step":
            return torch.optim.lr_scheduler.StepLR(optimizer, c.lr_step, gamma=c.lr_factor)
        mode = "max" if self.task.higher_is_better else "min"
        if c.schedule == "plateau":
            return torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode=mode, factor=c.lr_factor, patience=c.lr_patience)
        if c.schedule == "regress":
            return AnnealOnRegression(optimizer, factor=c.lr_factor, window=c.lr_window,
                                      after=c.lr_after, mode=mode, on_tie=c.lr_on_tie)
        if c.schedule == "cosine":
            return CosineOverEpochs(optimizer, lr=c.lr, epochs=c.epochs)
        return None

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """Example indices for training epoch ``epoch`` (0-based): seeded, same on every process."""
        n = len(self.datasets["train"])
        if not self.task.shuffle:
            return torch.arange(n)
        g = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
        return torch.randperm(n, generator=g)

    def log(self, record: dict[str, Any]) -> None:
        """Record one epoch's metrics (main process only)."""
        if self.writer is not None:
            self.writer.write(record)
        logger.info("  ".join(f"{k}={_fmt(v)}" for k, v in record.items()))

    # ------------------------------------------------------------------ checkpoints
    def _tick(self) -> None:
        """Bring the state's clocks up to now (before a checkpoint): ``wall_seconds`` over every
        session, and ``epoch_seconds``, the time spent in the epoch in progress (so that a
        resumed epoch's ``seconds`` also count the sessions before)."""
        if self._clock is None:
            return
        started, wall_before, epoch_start = self._clock
        now = time.monotonic()
        self.state["wall_seconds"] = wall_before + now - started
        self.state["epoch_seconds"] = now - epoch_start if self.state["step_in_epoch"] else 0.0

    def _trainer_state(self) -> dict[str, Any]:
        return {**self.state, "run": self.run_info, "data_signature": self.data_signature}

    def save_checkpoint(self, name: str) -> None:
        """Write ``<out_dir>/<name>.ckpt`` atomically (main process only; every process calls
        it, to sum the epoch's running totals over processes first)."""
        if self.out_dir is None:
            return
        self._tick()
        # The checkpoint holds the *global* running totals of the epoch in progress; on resume
        # only rank 0 takes them back (see ``restore``), so they are not counted twice. Every
        # process takes part in the sum, also one whose totals are empty.
        running = self.reduce_totals(dict(self.state["running"]))
        if not self.is_main:
            return
        from .checkpoint import save_checkpoint

        path = self.out_dir / f"{name}.ckpt"
        try:
            save_checkpoint(path, self.model, self.optimizer, self.scheduler,
                            trainer_state={**self._trainer_state(), "running": running},
                            averaged=self.ema.module if self.ema is not None else None)
        except OSError as e:  # disk full, quota, I/O error: the atomic write kept the old file
            raise OSError(e.errno, f"could not write checkpoint {path} ({e.strerror or e}); the "
                          "previous checkpoint there is intact: free space and run again with "
                          "--resume") from e

    def restore(self, path) -> None:
        """Continue from checkpoint ``path``: weights, optimizer, scheduler, RNG, counters.

        Raises:
            ValueError: the checkpoint is corrupted, or was written by a different run
                (task, model, data or training settings other than
                ``epochs``/``max_steps``/``time_limit``/``device``).
        """
        from .checkpoint import load_checkpoint, set_rng_state

        ckpt = load_checkpoint(path, device=self.device)
        stored = ckpt.trainer_state.get("run", {})
        if isinstance(stored.get("data"), dict) and stored.get("task") == self.task.name:
            stored = {**stored, "data": self.task.stored_data_settings(stored["data"])}
        diff = run_differences(stored, self.run_info)
        if diff:
            raise ValueError(f"{path} was written by a different run; differing settings "
                             f"(the run's -> now): {diff}. Use another --out folder, or resume "
                             "with the run's own settings as key=value overrides (a preset may "
                             "have changed since the run).")
        changed = signature_mismatch(ckpt.trainer_state.get("data_signature"), self.data_signature)
        if changed:
            raise ValueError(f"{path}: the data now differs from the data the run was trained on "
                             f"({changed}); the files changed since. Resume with the original files.")
        done = ckpt.trainer_state.get("epoch", 0)
        if self.config.epochs < done:  # the result would claim more epochs than were planned
            raise ValueError(f"{path}: the run has already trained {done} epochs, but epochs="
                             f"{self.config.epochs}: resume with epochs>={done}")
        if self.ema is not None and ckpt.averaged is None:
            raise ValueError(f"{path} holds no weight average, but this run has ema="
                             f"{self.config.ema}: resume with the run's own settings")
        try:
            self.model.load_state_dict(ckpt.model.state_dict())
        except RuntimeError as e:
            raise ValueError(f"{path}: checkpoint weights do not fit this model ({e})") from None
        if self.ema is not None:
            self.ema.load_state_dict(ckpt.averaged.state_dict())
        if ckpt.optimizer_state is not None:
            self.optimizer.load_state_dict(ckpt.optimizer_state)
        if self.scheduler is not None and ckpt.scheduler_state is not None:
            self.scheduler.load_state_dict(ckpt.scheduler_state)
        # before the RNG is restored: reading a checkpoint builds (initialises) a model
        self._restore_best(path, ckpt.trainer_state.get("best_epoch"))
        if ckpt.rng:
            set_rng_state(ckpt.rng["tensors"], ckpt.rng["meta"])
        self.state.update({k: v for k, v in ckpt.trainer_state.items()
                           if k not in ("run", "data_signature")})
        if not self.is_main:
            self.state["running"] = {}  # the stored totals are global: rank 0 carries them
        if self.writer is not None:
            self.writer.truncate_after(self.state["step"])
        logger.info("resumed from %s at epoch %d, step %d", path, self.state["epoch"], self.state["step"])

    def _restore_best(self, last: Path, best_epoch: int | None) -> None:
        """Read back the run's ``best.ckpt`` now, not after the remaining epochs: a missing
        one would make the reported model the last weights (while ``best_epoch`` names an
        earlier epoch), and a corrupted one would fail only once training is over."""
        if best_epoch is None:
            return  # not validated yet: a best.ckpt there is an older run's
        from .checkpoint import load_checkpoint

        path = last.with_name("best.ckpt")
        if not path.exists():
            raise ValueError(f"{path} is missing, but {last} says the run validated (best epoch "
                             f"{best_epoch}): its best model is lost. Put best.ckpt "
                             "back, or start over with --overwrite.")
        try:
            best = load_checkpoint(path, device=self.device)
        except ValueError as e:
            raise ValueError(f"{e}. The run's best model is unreadable: put back an intact "
                             "best.ckpt, or start over with --overwrite.") from None
        self._best_weights = {k: v.detach().clone()
                              for k, v in best.inference_model.state_dict().items()}

    # ------------------------------------------------------------------ loop
    def _early_stop_reason(self) -> str | None:
        """Why training has converged by the run's own rules (``early_stop``, ``min_lr``), or None.

        Decided from the saved state alone, so a resumed run stops where an uninterrupted one did.
        """
        c, epoch, best_epoch = self.config, self.state["epoch"], self.state["best_epoch"]
        if c.early_stop is not None and best_epoch is not None and epoch - best_epoch >= c.early_stop:
            return f"{EARLY_STOP}: no better validation {self.task.metric} in {epoch - best_epoch} epochs"
        lr = self.optimizer.param_groups[0]["lr"]
        if c.min_lr is not None and lr < c.min_lr:
            return f"{EARLY_STOP}: lr {lr:.3g} annealed below min_lr={c.min_lr:g}"
        return None

    def _stop_reason(self, started: float) -> str | None:
        c = self.config
        if c.max_steps is not None and self.state["step"] >= c.max_steps:
            return f"max_steps={c.max_steps} reached"
        if c.time_limit is not None and time.monotonic() - started >= c.time_limit:
            return f"time_limit={c.time_limit:g}s reached"
        if self._stop is not None and self._stop.requested:
            return f"stopped by {self._stop.requested}"
        return None

    def train_step(self, batch: Any, stand_in: bool = False) -> dict[str, float]:
        """One optimizer step on ``batch`` (this process's shard); returns its totals.

        ``stand_in``: ``batch`` is a placeholder for a process whose shard is empty; it joins
        DDP's collectives with zero weight, so it changes nothing.
        """
        self.train_model.train()
        loss, totals = self.task.step(self.train_model, batch)
        if D.any_true(not bool(torch.isfinite(loss)), self.ctx):
            raise NonFiniteLossError(
                f"non-finite training loss ({loss.item()}) at step {self.state['step'] + 1} "
                f"(epoch {self.state['epoch'] + 1}, batch {self.state['step_in_epoch'] + 1})")
        count = 0 if stand_in else totals["count"]
        weight = D.loss_weight(count, D.global_count(count, self.ctx), self.ctx)
        self.optimizer.zero_grad(set_to_none=True)
        (loss * weight).backward()
        if self.config.clip is not None:
            # After backward, on the real gradients (the reference code clipped before it).
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip)
        else:
            norm = torch.nn.utils.get_total_norm([p.grad for p in self.model.parameters() if p.grad is not None])
        if not bool(torch.isfinite(norm)):
            # A finite loss can still give Inf/NaN gradients; stepping would poison the weights
            # (and the next checkpoint). DDP has all-reduced them: every process agrees.
            raise NonFiniteLossError(
                f"non-finite gradient (norm {norm.item()}) at step {self.state['step'] + 1} "
                f"(epoch {self.state['epoch'] + 1}, batch {self.state['step_in_epoch'] + 1})")
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model, updates_before=self.state["step"])
        return totals

    def train_epoch(self, started: float) -> str | None:
        """Train from the current position to the end of the epoch; a stop reason or None."""
        epoch, bs = self.state["epoch"], self.config.batch_size
        order = self.epoch_order(epoch)
        n_batches = math.ceil(len(order) / bs)
        running = self.state["running"]
        bar = _progress(n_batches, self.state["step_in_epoch"], f"epoch {epoch + 1}/{self.config.epochs}",
                        self.quiet or not self.is_main)
        try:
            for b in range(self.state["step_in_epoch"], n_batches):
                reason = self._stop_reason(started)
                # Clocks differ between processes: one reaching time_limit stops them all at
                # the same step (else the others would wait in DDP's all-reduce forever).
                if D.any_true(reason is not None, self.ctx):
                    # every process reports the same limit: that of the first rank to hit one
                    return next(r for r in D.gather_objects(reason, self.ctx) if r is not None)
                global_idx = order[b * bs:(b + 1) * bs]
                idx = self.shard(global_idx)
                # An epoch's last batch can hold fewer examples than there are processes: one
                # left without any runs a stand-in example with zero weight, because every
                # process must take part in DDP's gradient all-reduce.
                stand_in = len(idx) == 0
                batch = to_device(self.datasets["train"].batch(global_idx[:1] if stand_in else idx), self.device)
                D.seed_step(self.config.seed, self.state["step"], self.ctx)  # per-rank dropout
                totals = self.train_step(batch, stand_in)
                if not stand_in:
                    M.add_totals(running, totals)
                self.state["step"] += 1
                self.state["step_in_epoch"] = b + 1
                bar.update(1)
                if b % 10 == 0 or b == n_batches - 1:
                    bar.set_postfix(loss=f"{running['loss'] / running['count']:.4g}",
                                    **{self.task.metric: f"{_safe_metric(self.task, running):.4g}"})
                every = self.config.checkpoint_every
                if every and self.state["step"] % every == 0 and b + 1 < n_batches:
                    self.save_checkpoint("last")
        finally:
            bar.close()
        return None

    @torch.no_grad()
    def evaluate(self, split: str, model: nn.Module | None = None) -> dict[str, float]:
        """``{"loss": ..., <metric>: ..., <extra metrics>}`` of ``model`` (default:
        :attr:`eval_model`, the weight average or the model being trained) on ``split``."""
        model = model if model is not None else self.eval_model
        was_training = model.training
        model.eval()
        ds = self.datasets[split]
        bs = self.config.eval_batch_size or self.config.batch_size
        totals: dict[str, float] = {}
        for start in range(0, len(ds), bs):
            idx = self.shard(torch.arange(start, min(start + bs, len(ds))))
            if len(idx) == 0:
                continue
            _, t = self.task.step(model, to_device(ds.batch(idx), self.device))
            M.add_totals(totals, t)
        totals = self.reduce_totals(totals)
        model.train(was_training)
        out = {"loss": totals["loss"] / totals["count"], self.task.metric: self.task.metric_value(totals)}
        out.update(self.task.extra_metrics(totals))
        return out

    def fit(self, resume: bool = False) -> FitResult:
        """Train until ``config.epochs`` (or a limit), then test the best-validation model.

        Args:
            resume: continue from ``<out_dir>/last.ckpt`` (starts fresh when it does not exist).
        """
        restored = False
        if resume:
            last = self.out_dir / "last.ckpt" if self.out_dir is not None else None
            if last is None:
                raise ValueError("resume needs an out_dir holding last.ckpt")
            if not D.agree(last.exists(), self.ctx):
                raise ValueError(f"{last} exists for some processes and not for others: the run "
                                 "folder must be on a file system shared by every node")
            if last.exists():
                self.restore(last)
                restored = True
            else:
                logger.info("no checkpoint at %s: starting from scratch", last)
        if not restored:
            # Dropout and anything else random draws from here: the same seed, the same run,
            # whatever the process did before (a resumed run restores the saved states instead).
            seed_everything(self.config.seed)
            if self.writer is not None:
                self.writer.truncate_after(0)  # a fresh run replaces an earlier run's log
        started = time.monotonic()
        wall_before = self.state["wall_seconds"]
        metric = self.task.metric
        with GracefulStop() as self._stop:
            reason = self._train_epochs(started, wall_before)
            self.state["wall_seconds"] = wall_before + time.monotonic() - started
            test = self.evaluate("test", self.best_model())
            self.on_fit_end()
        self._stop = None
        hist = self.state["history"]
        return FitResult(
            epochs=self.state["epoch"], steps=self.state["step"],
            complete=reason is None or reason.startswith(EARLY_STOP),
            stop_reason=reason, best_valid=self.state["best"], best_epoch=self.state["best_epoch"],
            test=test, test_history=[r[f"test_{metric}"] for r in hist if f"test_{metric}" in r],
            history=hist, wall_seconds=self.state["wall_seconds"])

    def _train_epochs(self, started: float, wall_before: float) -> str | None:
        """The epoch loop of :meth:`fit`: train, validate, anneal, checkpoint; a stop reason or None."""
        metric = self.task.metric
        reason = None
        try:
            while self.state["epoch"] < self.config.epochs:
                reason = self._early_stop_reason()
                if reason:
                    logger.info("%s: stopping after epoch %d", reason, self.state["epoch"])
                    break
                # a resumed epoch also counts its time in the sessions before
                epoch_start = time.monotonic() - self.state.get("epoch_seconds", 0.0)
                self._clock = (started, wall_before, epoch_start)
                reason = self.train_epoch(started)
                if reason:
                    self.save_checkpoint("last")  # mid-epoch: a resume continues from here
                    break
                train = self.reduce_totals(self.state["running"])
                record = {"epoch": self.state["epoch"] + 1, "step": self.state["step"],
                          "lr": self.optimizer.param_groups[0]["lr"],
                          "train_loss": train["loss"] / train["count"],
                          f"train_{metric}": self.task.metric_value(train)}
                valid = self.evaluate("valid")
                record.update({f"valid_{k}": v for k, v in valid.items()})
                if self.config.test_every_epoch:
                    record.update({f"test_{k}": v for k, v in self.evaluate("test").items()})
                self.state["epoch"] += 1
                self.state["step_in_epoch"] = 0
                self.state["running"] = {}
                if isinstance(self.scheduler, (torch.optim.lr_scheduler.ReduceLROnPlateau,
                                               AnnealOnRegression)):
                    self.scheduler.step(valid[metric])
                elif self.scheduler is not None:
                    self.scheduler.step()
                record["seconds"] = time.monotonic() - epoch_start
                self.state["history"].append(record)
                self.log(record)
                if M.is_better(valid[metric], self.state["best"], metric):
                    self.state["best"], self.state["best_epoch"] = valid[metric], self.state["epoch"]
                    self._best_weights = {k: v.detach().clone()
                                          for k, v in self.eval_model.state_dict().items()}
                    self.save_checkpoint("best")
                self.save_checkpoint("last")
        except NonFiniteLossError as e:
            reason = str(e)
            logger.error("%s; stopping (the best checkpoint is kept as it was)", e)
        if reason and reason.startswith("stopped by"):
            logger.warning("%s: last.ckpt saved at step %d; testing the best model (a second "
                           "signal aborts that; --resume continues the run)", reason, self.state["step"])
        return reason

    def best_model(self) -> nn.Module:
        """A copy of the model with the best-validation weights (the current
        :attr:`eval_model` weights if none). A resumed run read its best weights back from
        ``best.ckpt`` in :meth:`restore`."""
        weights = self._best_weights
        if weights is None and self.ema is not None:
            weights = self.ema.state_dict()
        model = copy.deepcopy(self.model)  # keeps the trained model's requires_grad flags
        if weights is not None:
            model.load_state_dict(weights)
        return model

    def on_fit_end(self) -> None:
        """Write the best model (``model.safetensors``) and the learning curves (main only)."""
        if self.out_dir is None or not self.is_main:
            return
        if self.writer is not None:
            self.writer.close()
        from .io import save

        if self.state["best_epoch"] is None:
            # Nothing was validated: say so rather than let the file pass for a trained model.
            resumable = (self.out_dir / "last.ckpt").exists()
            logger.warning("no epoch finished: model.safetensors holds the unvalidated weights at "
                           "step %d%s", self.state["step"],
                           " (--resume continues the run)" if resumable else "")
        try:
            save(self.best_model(), self.out_dir / "model.safetensors",
                 metadata=self.task.model_metadata(self.datasets))
        except TypeError:  # not a registered torchtcn model: nothing portable to save
            logger.debug("model is not a registered torchtcn model; model.safetensors not written")
        if self.state["history"]:
            from .report import plot_learning_curves

            try:
                plot_learning_curves(self.state["history"], self.task.metric, self.out_dir / "curves.png",
                                     title=self.run_info.get("task", ""))
            except ImportError as e:
                logger.warning("%s: no learning-curve plot", e)


def _safe_metric(task, totals: dict[str, float]) -> float:
    try:
        return task.metric_value(totals)
    except (ValueError, KeyError, OverflowError):
        return float("nan")


def _fmt(v: Any) -> str:
    return f"{v:.5g}" if isinstance(v, float) else str(v)


def _train_defaults() -> dict[str, Any]:
    return {f.name: f.default for f in dataclasses.fields(TrainConfig)
            if f.default is not dataclasses.MISSING}


def run_differences(stored: dict[str, Any], current: dict[str, Any],
                    ignore: tuple[str, ...] = RESUMABLE_CHANGES) -> list[str]:
    """Settings that differ between two run descriptions (:meth:`RunSpec.to_dict` form), as
    ``"section.key: old -> new"``, ignoring the trainer settings ``ignore`` (by default
    :data:`RESUMABLE_CHANGES`, those a resume may change).

    Example:
        >>> run_differences({"train": {"lr": 0.1, "epochs": 5}}, {"train": {"lr": 0.2, "epochs": 9}})
        ['train.lr: 0.1 -> 0.2']
    """
    if not stored or not current:
        return []
    diffs = []
    for key in sorted(set(stored) | set(current)):
        a, b = stored.get(key), current.get(key)
        if key == "train" and isinstance(a, dict) and isinstance(b, dict):
            # a trainer setting added since the run was made: its default is what ran then
            a = {**{k: v for k, v in _train_defaults().items() if k in b}, **a}
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                if key == "train" and k in ignore:
                    continue
                if a.get(k) != b.get(k):
                    diffs.append(f"{key}.{k}: {a.get(k)!r} -> {b.get(k)!r}")
        elif a != b:
            diffs.append(f"{key}: {a!r} -> {b!r}")
    return diffs


def signature_mismatch(stored: dict[str, Any] | None, current: dict[str, Any]) -> str | None:
    """``None`` if the data signature of a checkpoint (``stored``; ``None`` for one written
    before signatures were kept) agrees with that of the data loaded now, else what differs.

    Example:
        >>> signature_mismatch({"vocabulary_size": 3}, {"vocabulary_size": 4})
        'vocabulary_size: 3 when trained, 4 now'
    """
    if not stored:
        return None
    diffs = [f"{k}: {stored.get(k)} when trained, {current.get(k)} now"
             for k in sorted(set(stored) | set(current)) if stored.get(k) != current.get(k)]
    return "; ".join(diffs) or None


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """A :class:`TrainConfig` from its ``dataclasses.asdict`` form (e.g. from a checkpoint)."""
    from .configs import config_from_dict as _strict

    return _strict(TrainConfig, data)


__all__ = ["TrainConfig", "Trainer", "FitResult", "NonFiniteLossError", "seed_everything",
           "resolve_device", "hardware_description", "to_device", "config_from_dict", "run_differences",
           "signature_mismatch"]
