"""The reference code's learning-rate rule: anneal when validation gets *worse* than recently.

Bai et al.'s music and language-model scripts do not use ``ReduceLROnPlateau``. After a
warm-up of ``after`` epochs they divide the learning rate whenever the new validation loss is
worse than *every* one of the previous ``window`` epochs (music: ``vloss > max(last 3)`` after
epoch 10, ÷10; char LM: after epoch 5, ÷10; word LM: ``max(last 5)`` after epoch 5, ÷2).
That fires far less often than plateau patience (which anneals whenever the best value stops
improving), so the rate is not driven to ~1e-8 half-way through a 100-epoch run.
"""

from __future__ import annotations

import torch

__all__ = ["AnnealOnRegression"]


class AnnealOnRegression:
    """Multiply the lr by ``factor`` when the metric is worse than all of the last ``window``.

    Args:
        optimizer: whose param groups' ``lr`` is annealed.
        factor: multiplier in (0, 1).
        window: how many previous epochs the new value is compared with.
        after: no annealing during the first ``after`` epochs (the reference's ``ep > after``).
        mode: ``"min"`` (a loss) or ``"max"`` (an accuracy).

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
                 after: int = 10, mode: str = "min"):
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
        self.mode = mode
        self.history: list[float] = []

    def _worse_than_all(self, value: float, recent: list[float]) -> bool:
        sign = 1.0 if self.mode == "min" else -1.0  # compare as losses
        worst = max(sign * v for v in recent)
        return sign * value > worst  # a tie (the word script's >=) never happens with float losses

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
