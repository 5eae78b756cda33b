"""An exponential moving average (EMA) of a model's weights, for evaluation.

Training with a noisy gradient (one JSB chorale per step, small batches) leaves the weights
jittering around a minimum; their running average usually validates better than any single
iterate (Polyak averaging). :class:`WeightEMA` keeps that average in a copy of the model,
which the trainer validates, checkpoints and saves when ``TrainConfig.ema`` is set.

The decay is warmed up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` earlier updates
(TensorFlow's ``ExponentialMovingAverage(num_updates=...)``), so that the average tracks the
fast-moving early weights instead of being dominated by the initialisation. Because the warm-up
depends only on ``n``, a resumed run (which stores the average and the step count) averages
exactly as an uninterrupted one.

Example:
    >>> import torch, torchtcn
    >>> model = torchtcn.TCN(1, [4, 4], kernel_size=3)
    >>> ema = WeightEMA(model, decay=0.99)
    >>> with torch.no_grad():
    ...     _ = [p.add_(1.0) for p in model.parameters()]
    >>> ema.update(model, updates_before=0)  # warm-up decay min(0.99, 1/10) = 0.1
    >>> w, w_ema = model.parameters().__next__(), ema.module.parameters().__next__()
    >>> bool(torch.allclose(w_ema, w - 0.1))
    True
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["WeightEMA", "warmup_decay"]


def warmup_decay(decay: float, updates_before: int) -> float:
    """The decay of update number ``updates_before + 1``: ``min(decay, (1 + n) / (10 + n))``.

    Example:
        >>> warmup_decay(0.999, 0), warmup_decay(0.999, 10**6)
        (0.1, 0.999)
    """
    n = updates_before
    return min(decay, (1.0 + n) / (10.0 + n))


class WeightEMA:
    """An EMA of ``model``'s parameters and floating-point buffers, held in ``self.module``.

    ``module`` is a frozen copy of ``model`` (``requires_grad`` off) with the same
    architecture and state-dict keys, so its weights load into ``model`` and vice versa.
    Integer buffers (BatchNorm's ``num_batches_tracked``) are copied, not averaged; shared
    tensors (a tied embedding/decoder) are averaged once.

    Args:
        model: the model being trained.
        decay: in (0, 1); the weight of the old average at each update once warmed up.
    """

    def __init__(self, model: nn.Module, decay: float):
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be a number in (0, 1), got {decay!r}")
        self.decay = float(decay)
        self.module = copy.deepcopy(model)
        self.module.requires_grad_(False)
        self.module.eval()

    @torch.no_grad()
    def update(self, model: nn.Module, updates_before: int) -> None:
        """Move the average towards ``model``'s current weights (call after each optimizer
        step; ``updates_before``: how many updates came before this one)."""
        keep = warmup_decay(self.decay, updates_before)
        # parameters() and buffers() yield each shared tensor once, in the same order for
        # the copy as for the original
        averaged = list(self.module.parameters()) + list(self.module.buffers())
        current = list(model.parameters()) + list(model.buffers())
        if len(averaged) != len(current) or any(a.shape != b.shape for a, b in zip(averaged, current)):
            raise ValueError(f"WeightEMA.update: the model does not match the averaged one "
                             f"({len(current)} tensors against {len(averaged)}, or other shapes)")
        for avg, new in zip(averaged, current):
            if avg.is_floating_point() or avg.is_complex():
                avg.lerp_(new.detach(), 1.0 - keep)
            else:
                avg.copy_(new)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights (``model.state_dict()`` keys)."""
        return self.module.state_dict()

    def load_state_dict(self, weights: dict[str, torch.Tensor]) -> None:
        """Replace the average (strict, as ``nn.Module.load_state_dict``)."""
        self.module.load_state_dict(weights)
