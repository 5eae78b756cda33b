"""Weight normalisation that stays finite when a direction vector shrinks to zero.

``w = g * v / ||v||`` per output channel (Salimans & Kingma 2016), or ``g * v / eps`` where
``||v|| <= eps``. torch's own ``parametrizations.weight_norm`` divides by ``||v||`` with no
guard: under weight decay the direction ``v`` of a dead ReLU channel (zero gradient) decays
geometrically, its squared entries underflow float32 and the weight becomes 0/0 = NaN, which
ends training. Here such a channel's weight goes to zero instead.

The parametrization is registered exactly as torch's is (``parametrizations.weight.original0``
is ``g``, ``original1`` is ``v``), so state dicts and checkpoints are interchangeable.

Example::

    conv = weight_norm(nn.Conv1d(8, 16, 3))   # conv.weight: (16, 8, 3) = g * v / ||v||
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

#: Smallest norm divided by. Far above the float32 underflow of ||v||^2 (about 1e-19 per
#: entry), far below the norm of any live weight.
EPS = 1e-12


class SafeWeightNorm(nn.Module):
    """The parametrization ``(g, v) -> g * v / max(||v||, eps)``, norms over all but ``dim`` 0.

    Equal to torch's ``weight_norm`` up to float rounding (a few ulps: the norm is reduced in
    another order) wherever ``||v|| > eps``, so models made with either are interchangeable.

    Shapes: ``g`` is (C_out, 1, ..., 1), ``v`` and the result are the weight's shape.
    """

    def __init__(self, eps: float = EPS):
        super().__init__()
        self.eps = eps

    def forward(self, weight_g: torch.Tensor, weight_v: torch.Tensor) -> torch.Tensor:
        # per output channel, shaped like g (C_out, 1, ..., 1); only per-channel tensors are
        # saved for backward (torch's _weight_norm kernel would need a guarded copy of v)
        norm = torch.linalg.vector_norm(weight_v.flatten(1), dim=1).reshape(weight_g.shape)
        return weight_v * (weight_g / norm.clamp_min(self.eps))

    def right_inverse(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # the same split as torch's weight_norm: g = ||w|| per output channel, v = w
        return torch.norm_except_dim(weight, 2, 0), weight


def weight_norm(module: nn.Module, name: str = "weight", eps: float = EPS) -> nn.Module:
    """Reparametrize ``module.<name>`` as ``g * v / max(||v||, eps)``; returns ``module``."""
    parametrize.register_parametrization(module, name, SafeWeightNorm(eps), unsafe=True)
    return module
