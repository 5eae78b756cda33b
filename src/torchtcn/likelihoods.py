"""Probabilistic forecasts: how a forecaster's head outputs describe each target.

A head with ``params * D`` outputs forecasts ``D`` targets; the outputs are parameter-major
(``raw[:, p * D : (p + 1) * D]`` is parameter ``p`` of every target). Three kinds:

- ``none``: one output per target, the point forecast, trained on the squared error.
- ``gaussian``: a mean and a standard deviation per target (``softplus`` of the second
  output, plus ``MIN_STD``), trained on the Gaussian negative log-likelihood (Nix & Weigend
  1994; DeepAR's Gaussian output).
- ``quantile``: one output per quantile level, trained on the pinball (quantile) loss averaged
  over the levels (Koenker & Bassett 1978; the MQ-RNN/TFT recipe). The levels always include
  the median, which is the point forecast. Crossing quantiles are sorted (rearrangement,
  Chernozhukov et al. 2010), which never increases the pinball loss.

Every kind has a point forecast (mean or median), so models of every kind are compared on
one metric, the squared error of that point.

Example:
    >>> lik = Likelihood("quantile", (0.1, 0.9))
    >>> lik.quantiles, lik.params
    ((0.1, 0.5, 0.9), 3)
    >>> raw = torch.zeros(2, 3 * 4, 5)            # (N, params * D, T): D = 4 targets
    >>> lik.point(raw).shape, lik.loss(raw, torch.zeros(2, 4, 5)).shape
    (torch.Size([2, 4, 5]), torch.Size([2, 4, 5]))
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F

KINDS = ("none", "gaussian", "quantile")
#: Floor of a Gaussian forecast's standard deviation (in the units the model sees), so a
#: perfectly predictable target cannot drive the likelihood to infinity.
MIN_STD = 1e-3
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def parse_quantiles(value) -> tuple[float, ...]:
    """``"0.1,0.9"`` (or a sequence of numbers) -> ``(0.1, 0.9)``; each level in (0, 1).

    Example:
        >>> parse_quantiles("0.9, 0.1")
        (0.1, 0.9)
    """
    items = value.split(",") if isinstance(value, str) else value
    try:
        levels = [float(q) for q in items]
    except (TypeError, ValueError):
        raise ValueError(f"quantiles must be numbers in (0, 1) separated by commas, got "
                         f"{value!r}") from None
    bad = [q for q in levels if not 0.0 < q < 1.0]
    if bad or not levels:
        raise ValueError(f"quantiles must be numbers in (0, 1), got {value!r}")
    if len(set(levels)) != len(levels):
        raise ValueError(f"quantiles must be distinct, got {value!r}")
    return tuple(sorted(levels))


@dataclass(frozen=True)
class Likelihood:
    """The kind of forecast a head makes; see the module docstring.

    Args:
        kind: ``none`` | ``gaussian`` | ``quantile``.
        quantiles: the levels of a ``quantile`` forecast (the median is added when missing);
            ignored by the other kinds.
    """

    kind: str = "none"
    quantiles: tuple[float, ...] = ()

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"likelihood must be one of {list(KINDS)}, got {self.kind!r}")
        levels = ()
        if self.kind == "quantile":
            # none given: the median alone (it is added to any levels)
            given = self.quantiles
            if given is None:
                given = ()
            elif (isinstance(given, numbers.Real) and not isinstance(given, bool)) or (
                    getattr(given, "ndim", None) == 0 and not isinstance(given, str)):
                given = (float(given),)  # one level (a numpy scalar, a 0-d tensor or array)
            elif isinstance(given, (Mapping, bytes)) or not isinstance(given, (str, Iterable)):
                raise TypeError(f"quantiles must be a str '0.1,0.9', numbers (a list, array, "
                                f"tensor) or one number, got {type(given).__name__} {given!r}")
            elif not isinstance(given, str):
                given = list(given)  # any iterable: parse_quantiles makes each a float
            levels = parse_quantiles(given) if len(given) else ()
            if 0.5 not in levels:
                levels = tuple(sorted((*levels, 0.5)))
        object.__setattr__(self, "quantiles", levels)

    @property
    def params(self) -> int:
        """Head outputs per target."""
        return {"none": 1, "gaussian": 2}.get(self.kind, len(self.quantiles))

    def _split(self, raw: torch.Tensor) -> list[torch.Tensor]:
        if not isinstance(raw, torch.Tensor) or raw.dim() < 2:
            found = tuple(raw.shape) if isinstance(raw, torch.Tensor) else type(raw).__name__
            raise ValueError(f"forecasts must be a tensor (N, outputs, ...), found {found}")
        if raw.shape[1] % self.params:
            raise ValueError(f"a {self.kind} forecast needs {self.params} outputs per target, "
                             f"got {raw.shape[1]} outputs on dim 1 of {tuple(raw.shape)}")
        return list(raw.chunk(self.params, dim=1))

    def _sorted_quantiles(self, raw: torch.Tensor) -> torch.Tensor:
        """(N, Q, D, ...) quantile forecasts, sorted along the levels."""
        return torch.stack(self._split(raw), 1).sort(dim=1).values

    def point(self, raw: torch.Tensor) -> torch.Tensor:
        """The point forecast (N, D, ...): the output, the mean, or the median."""
        if self.kind == "none":
            return raw
        if self.kind == "gaussian":
            return self._split(raw)[0]
        return self._sorted_quantiles(raw)[:, self.quantiles.index(0.5)]

    def std(self, raw: torch.Tensor) -> torch.Tensor:
        """A Gaussian forecast's standard deviation (N, D, ...)."""
        if self.kind != "gaussian":
            raise ValueError(f"a {self.kind} forecast has no standard deviation")
        return F.softplus(self._split(raw)[1]) + MIN_STD

    def loss(self, raw: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-target training loss (N, D, ...) of forecasts ``raw`` for targets ``y``.

        Raises:
            ValueError: ``y`` is not shaped as the point forecast (N, D, ...): broadcasting
                would score every sequence against every other's targets.
        """
        self._split(raw)  # checks raw
        expected = (raw.shape[0], raw.shape[1] // self.params, *raw.shape[2:])
        if not isinstance(y, torch.Tensor) or tuple(y.shape) != expected:
            found = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise ValueError(f"targets must have the point forecast's shape {expected} (N, D, ...) "
                             f"for {tuple(raw.shape)} {self.kind} outputs, found {found}")
        if self.kind == "none":
            return (raw - y).square()
        if self.kind == "gaussian":
            mean, std = self.point(raw), self.std(raw)
            return ((y - mean) / std).square() * 0.5 + std.log() + _HALF_LOG_2PI
        levels = torch.tensor(self.quantiles, dtype=raw.dtype, device=raw.device)
        levels = levels.view(1, -1, *([1] * (y.dim() - 1)))
        err = y.unsqueeze(1) - torch.stack(self._split(raw), 1)  # (N, Q, D, ...)
        return torch.maximum(levels * err, (levels - 1) * err).mean(1)

    def quantile_forecasts(self, raw: torch.Tensor) -> torch.Tensor:
        """A quantile forecast's levels, sorted: (N, Q, D, ...)."""
        if self.kind != "quantile":
            raise ValueError(f"a {self.kind} forecast has no quantile levels")
        return self._sorted_quantiles(raw)

    def to_json(self) -> dict:
        return {"kind": self.kind, "quantiles": list(self.quantiles)}

    @classmethod
    def from_json(cls, data: dict | None) -> Likelihood:
        """The inverse of :meth:`to_json`; None (a model saved before likelihoods) -> none."""
        if not data:
            return cls()
        return cls(data["kind"], tuple(data.get("quantiles") or ()))
