"""Learning-rate schedules the trainer needs beyond ``torch.optim.lr_scheduler``.

:class:`AnnealOnRegression` is the reference code's rule: anneal when validation gets *worse*
than recently. :class:`CosineOverEpochs` is a cosine whose every value is a function of the
epoch and the planned epochs, so a run resumed with more epochs follows the longer cosine.

Bai et al.'s music and language-model scripts do not use ``ReduceLROnPlateau``. After a
warm-up of ``after`` epochs they divide the learning rate whenever the new validation loss is
worse than *every* one of the previous ``window`` epochs (music: ``vloss > max(last 3)`` after
epoch 10, ÷10; char LM: after epoch 5, ÷10; word LM: ``max(last 5)`` after epoch 5, ÷2).
That fires far less often than plateau patience (which anneals whenever the best value stops
improving), so the rate is not driven to ~1e-8 half-way through a 100-epoch run.
"""

from __future__ import annotations

import math

import torch

__all__ = ["AnnealOnRegression", "CosineOverEpochs"]


class AnnealOnRegression:
    """Multiply the lr by ``factor`` when the metric is worse than all of the last ``window``.

    Args:
        optimizer: whose param groups' ``lr`` is annealed.
        factor: multiplier in (0, 1).
        window: how many previous epochs the new value is compared with.
        after: no annealing during the first ``after`` epochs (the reference's ``ep > after``).
        mode: ``"min"`` (a loss) or ``"max"`` (an accuracy).
        on_tie: also anneal when the value equals the worst of the window (the word-level
            scripts' ``>=``; the music and char scripts use ``>``). Ties are real once the
            weights stop moving: without it such a run never anneals again.

    Call :meth:`step` once per epoch with the validation metric. Its state (the history) is
    saved in checkpoints, so a resumed run anneals exactly when an uninterrupted one would.

    Example:
        >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        >>> sched = AnnealOnRegression(opt, factor=0.1, window=3, after=2)
        >>> [sched.step(v) for v in [5.0, 4.0, 3.0, 3.5, 6.0]]  # 6.0 > max(4.0, 3.0, 3.5)
        [False, False, False, False, True]
        >>> opt.param_groups[0]["lr"]
        0.1
    """

    def __init__(self, optimizer: torch.optim.Optimizer, factor: float = 0.1, window: int = 3,
                 after: int = 10, mode: str = "min", on_tie: bool = False):
        if not 0.0 < factor < 1.0:
            raise ValueError(f"factor must be in (0, 1), got {factor!r}")
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be a positive int, got {window!r}")
        if isinstance(after, bool) or not isinstance(after, int) or after < 0:
            raise ValueError(f"after must be an int >= 0, got {after!r}")
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.optimizer = optimizer
        self.factor, self.window, self.after = factor, window, after
        if not isinstance(on_tie, bool):
            raise TypeError(f"on_tie must be a bool, got {on_tie!r}")
        self.mode, self.on_tie = mode, on_tie
        self.history: list[float] = []

    def _worse_than_all(self, value: float, recent: list[float]) -> bool:
        sign = 1.0 if self.mode == "min" else -1.0  # compare as losses
        worst = max(sign * v for v in recent)
        return sign * value >= worst if self.on_tie else sign * value > worst

    def step(self, value: float) -> bool:
        """Record this epoch's metric; anneal and return True if it regressed."""
        value = float(value)
        epoch = len(self.history) + 1
        recent = self.history[-self.window:]
        annealed = epoch > self.after and bool(recent) and self._worse_than_all(value, recent)
        if annealed:
            for group in self.optimizer.param_groups:
                group["lr"] *= self.factor
        self.history.append(value)
        return annealed

    def state_dict(self) -> dict:
        return {"history": list(self.history)}

    def load_state_dict(self, state: dict) -> None:
        history = state.get("history")
        if not isinstance(history, list) or not all(isinstance(v, (int, float)) for v in history):
            raise ValueError(f"scheduler state needs a list of numbers under 'history', got {history!r}")
        self.history = [float(v) for v in history]


class CosineOverEpochs:
    """The lr of epoch ``e`` (0-based) is ``lr * (1 + cos(pi * e / epochs)) / 2``.

    Unlike ``CosineAnnealingLR`` it keeps no lr of its own: only the epoch count is saved, and
    every lr is recomputed from it, ``lr`` and ``epochs``. A resumed run with the same plan
    continues exactly; one resumed with more epochs (``--epochs``) keeps what it trained and
    runs its remaining epochs on the longer cosine (not on the stale lr of the shorter one).

    Args:
        optimizer: whose param groups' ``lr`` is set.
        lr: the starting learning rate (the run's setting, not the optimizer's current value).
        epochs: the planned epochs; the last epoch runs at a small but non-zero lr.

    Example:
        >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        >>> sched = CosineOverEpochs(opt, lr=1.0, epochs=4)
        >>> [round(sched.step(), 3) for _ in range(3)]  # the lr of epochs 2, 3 and 4
        [0.854, 0.5, 0.146]
    """

    def __init__(self, optimizer: torch.optim.Optimizer, lr: float, epochs: int):
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs must be a positive int, got {epochs!r}")
        self.optimizer, self.lr, self.epochs = optimizer, float(lr), epochs
        self.epoch = 0
        self._apply()

    def lr_at(self, epoch: int) -> float:
        return self.lr * (1.0 + math.cos(math.pi * min(epoch, self.epochs) / self.epochs)) / 2.0

    def _apply(self) -> float:
        lr = self.lr_at(self.epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def step(self) -> float:
        """Call once at the end of each epoch; sets and returns the next epoch's lr."""
        self.epoch += 1
        return self._apply()

    def state_dict(self) -> dict:
        return {"epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        epoch = state.get("epoch")
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"scheduler state needs an int >= 0 under 'epoch', got {epoch!r}")
        self.epoch = epoch
        self._apply()
