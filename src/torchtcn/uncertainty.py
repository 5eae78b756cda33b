"""Monte Carlo dropout: a predictive mean and spread from dropout left on at inference
(Gal & Ghahramani, 2016), for any model built from torch modules.

Only the dropout layers sample; everything else stays in eval mode, so batch-norm statistics
are neither used from the batch nor updated.

Example:
    >>> import torch, torchtcn
    >>> model = torchtcn.TCN(1, [8, 8], kernel_size=3, dropout=0.2)
    >>> mean, std = mc_predict(model, torch.randn(4, 1, 20), samples=10)
    >>> mean.shape, bool((std > 0).any())
    (torch.Size([4, 8, 20]), True)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["mc_dropout", "mc_predict"]


def _samples_dropout(module: nn.Module) -> bool:
    # nn.Dropout / Dropout1d / ... (torchtcn's own dropouts subclass them), and the layers
    # whose dropout is functional, keyed on their own mode: recurrent layers' between-layer
    # dropout and attention's dropout on the weights
    if isinstance(module, nn.modules.dropout._DropoutNd):
        return True
    if isinstance(module, (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)):
        # in eval mode torch runs these through a fused fast path that applies no dropout
        return any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0
                   for m in module.modules())
    return isinstance(module, (nn.RNNBase, nn.MultiheadAttention)) and module.dropout > 0


@contextlib.contextmanager
def mc_dropout(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block, ``model`` is in eval mode except its dropout layers, which draw a new
    mask at every call. Every module's mode is restored on exit, even after an error.

    Example:
        >>> import torch, torchtcn
        >>> model = torchtcn.TCN(1, [8, 8], kernel_size=3, dropout=0.5).eval()
        >>> x = torch.randn(4, 1, 20)
        >>> with mc_dropout(model):
        ...     bool((model(x) != model(x)).any())
        True
        >>> model.training
        False
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"mc_dropout needs an nn.Module, got {type(model).__name__}")
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        for m in model.modules():
            if _samples_dropout(m):
                m.train()
        yield model
    finally:
        for m, training in modes:
            m.training = training


def mc_predict(model: nn.Module, *inputs, samples: int = 30, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and standard deviation of ``samples`` dropout-sampled forward passes.

    Args:
        model: any module; ``model(*inputs, **kwargs)`` must return a tensor.
        samples: forward passes (>= 2). Seed torch first for reproducible results.

    Returns:
        ``(mean, std)``, each shaped like one output; ``std`` is the sample standard deviation
        (zero everywhere for a model without active dropout).

    Example:
        >>> import torch, torchtcn
        >>> clf = torchtcn.SequenceModel(torchtcn.TCN(1, [8, 8], dropout=0.2), "last_step", 3)
        >>> mean, std = mc_predict(clf, torch.randn(4, 1, 5), samples=20)   # x: (N, C, T)
        >>> mean.shape, std.shape, bool((std > 0).all())
        (torch.Size([4, 3]), torch.Size([4, 3]), True)
    """
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 2:
        raise ValueError(f"samples must be an int >= 2, got {samples!r}")
    with torch.no_grad(), mc_dropout(model):
        first = model(*inputs, **kwargs)
        if not isinstance(first, torch.Tensor):
            raise TypeError(f"mc_predict needs a model returning a tensor, got {type(first).__name__}")
        # Welford's running mean and squared deviations: two outputs of memory whatever the
        # number of samples, and no cancellation when the spread is small against the mean
        mean, m2 = first.clone(), torch.zeros_like(first)
        for k in range(2, samples + 1):
            y = model(*inputs, **kwargs)
            delta = y - mean
            mean += delta / k
            m2 += delta * (y - mean)
    return mean, (m2 / (samples - 1)).sqrt()
