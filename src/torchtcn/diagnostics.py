"""Empirical checks of a model's promises: which inputs an output really depends on.

``measure_receptive_field`` and ``check_causality`` treat the model as a black box (any module
mapping (N, C, T) to (N, C', T)), so they also catch leaks that analytic formulas cannot see,
such as batch norm in training mode mixing statistics across time.

Example:
    >>> import torchtcn
    >>> model = torchtcn.TCN(1, [8] * 3, kernel_size=3, activation="tanh")
    >>> measure_receptive_field(model)
    (29, 0)
    >>> check_causality(model)
    True
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def _prepare(model: nn.Module, train: bool):
    """A float64 CPU copy of ``model`` as a function of x alone (the caller's model keeps its
    mode, dtype and device). A conditioned model gets one fixed random vector per sequence:
    the same in every call, so it cannot make a past output move."""
    if not (isinstance(model, nn.Module) and hasattr(model, "in_channels")
            and hasattr(model, "layout")):
        hint = ": pass its .body" if hasattr(model, "body") else ""
        raise TypeError(f"expected a sequence-to-sequence model (TCN, LSTM, GRU, RNN) mapping "
                        f"(N, C, T) to (N, C', T), got {type(model).__name__}{hint}")
    probe = copy.deepcopy(model).double().cpu().train(train)
    channels = getattr(getattr(model, "config", None), "cond_channels", 0)
    if not channels:
        return probe

    def conditioned(x: torch.Tensor) -> torch.Tensor:
        gen = torch.Generator().manual_seed(1)  # the same vectors in every call
        return probe(x, cond=torch.randn(x.shape[0], channels, dtype=x.dtype, generator=gen))

    return conditioned


def _to_model_layout(x: torch.Tensor, model: nn.Module) -> torch.Tensor:
    return x.transpose(1, 2) if getattr(model, "layout", "NCL") == "NLC" else x


def _from_model_layout(y: torch.Tensor, model: nn.Module) -> torch.Tensor:
    return y.transpose(1, 2) if getattr(model, "layout", "NCL") == "NLC" else y


# Random probe inputs are drawn at each of these scales. At unit scale, a freshly initialised
# model with small weights (init_std=0.01) can be ruled by its biases: every ReLU on a path
# through the future is then off for every input, and a non-causal model looked causal (one
# 1-block model in 25). Large inputs switch those units on; float64 keeps the sums exact enough.
PROBE_SCALES = (1.0, 1e3)


def dependence(model: nn.Module, length: int, t: int, trials: int = 3, train: bool = False):
    """Bool mask (length,): which input steps output step ``t`` depends on.

    Computed from the gradient of output t with respect to every input, over ``trials`` random
    inputs at each of ``PROBE_SCALES`` (a path through a dead ReLU on one input is usually
    alive on another).
    """
    probe = _prepare(model, train)
    in_channels = model.in_channels
    mask = torch.zeros(length, dtype=torch.bool)
    gen = torch.Generator().manual_seed(0)
    for _ in range(trials):
        for scale in PROBE_SCALES:
            x = scale * torch.randn(2, in_channels, length, generator=gen, dtype=torch.float64)
            x.requires_grad_(True)
            y = _from_model_layout(probe(_to_model_layout(x, model)), model)
            (grad,) = torch.autograd.grad(y[:, :, t].sum(), x)
            mask |= grad.abs().sum(dim=(0, 1)) > 0
    return mask


def measure_receptive_field(model: nn.Module, length: int | None = None) -> tuple[int, int]:
    """Measured ``(receptive_field, lookahead)`` of ``model`` at an output in the middle.

    ``length`` defaults to three times the analytic receptive field (so the window is never
    clipped by the sequence ends). Compare with ``model.receptive_field`` / ``model.lookahead``.

    Example:
        >>> import torchtcn
        >>> model = torchtcn.TCN(1, [8, 8], kernel_size=3, causal=False)
        >>> measure_receptive_field(model), (model.receptive_field, model.lookahead)
        ((13, 6), (13, 6))
    """
    analytic = getattr(model, "receptive_field", None)
    if length is None:
        if analytic is None:
            raise ValueError("give a length: this model has no finite receptive field")
        length = 3 * analytic + 2
    elif isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"length must be an int >= 1 or None, got {length!r}")
    t = length // 2
    mask = dependence(model, length, t)
    steps = mask.nonzero().flatten()
    if steps.numel() == 0:
        return 0, 0
    first, last = int(steps.min()), int(steps.max())
    return last - first + 1, last - t


def check_causality(
    model: nn.Module, length: int = 64, train: bool = False, raise_on_leak: bool = False
) -> bool:
    """True when no output depends on a later input (perturbation test in float64).

    ``train=True`` checks the model in training mode (dropout disabled by a fixed seed per
    pass), which reveals leaks such as batch norm's statistics over time.

    Example:
        >>> import torchtcn
        >>> check_causality(torchtcn.TCN(1, [8, 8], norm="batch"))               # eval mode
        True
        >>> check_causality(torchtcn.TCN(1, [8, 8], norm="batch"), train=True)   # batch stats
        False
    """
    if isinstance(length, bool) or not isinstance(length, int) or length < 2:
        raise ValueError(f"length must be an int >= 2 (a step to perturb after another), "
                         f"got {length!r}")
    probe = _prepare(model, train)
    gen = torch.Generator().manual_seed(0)
    # the passes reseed torch's RNG (the same dropout masks in both): the caller's stream
    # of random numbers is put back afterwards
    with torch.random.fork_rng(devices=[]):
        for scale in PROBE_SCALES:
            x = scale * torch.randn(4, model.in_channels, length, generator=gen,
                                    dtype=torch.float64)
            if not _past_unmoved(probe, model, x, scale, gen, train, raise_on_leak):
                return False
    return True


def _past_unmoved(probe, model, x, scale, gen, train, raise_on_leak) -> bool:
    """Whether outputs before t0 stay bit-identical when x[t0:] moves by ``scale`` * noise,
    for three t0."""
    length = x.shape[-1]
    for t0 in (1, length // 2, length - 1):
        x2 = x.clone()
        x2[:, :, t0:] += scale * torch.randn(x2[:, :, t0:].shape, generator=gen, dtype=torch.float64)
        outs = []
        for inp in (x, x2):
            # identical dropout masks in both passes; the probe runs on the CPU, whose
            # generator alone fork_rng(devices=[]) restores (torch.manual_seed would also
            # reseed every CUDA generator)
            torch.default_generator.manual_seed(1234)
            y = _from_model_layout(probe(_to_model_layout(inp, model)), model)
            outs.append(y[:, :, :t0])
        if not torch.equal(outs[0], outs[1]):
            if raise_on_leak:
                raise ValueError(
                    f"model is not causal: outputs before step {t0} changed when inputs from "
                    f"step {t0} on changed (train={train})"
                )
            return False
    return True
