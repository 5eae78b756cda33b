"""Building blocks of a TCN: dilated (causal or non-causal) convolution, residual block, and the
factories for normalisation, activation, gating and dropout.

All tensors here are (N, C, T). Causality is by construction: the input is left-padded with
``F.pad`` and fed to an unpadded convolution, never padded on both sides and chomped.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations

from .receptive_field import conv_padding

ACTIVATIONS = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,
    "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
}
NORMS = ("weight", "batch", "layer", None)
GATES = ("glu", "wavenet", None)
DROPOUT_KINDS = ("element", "channel")


def make_activation(name: str) -> nn.Module:
    """An activation module by name (one of ``ACTIVATIONS``)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]()


class ChannelLayerNorm(nn.Module):
    """Layer norm over channels at each time step: (N, C, T) -> (N, C, T).

    It normalises every time step on its own, so unlike batch norm in training mode it never
    mixes statistics across time and stays causal.
    """

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


def make_norm(kind: str | None, channels: int) -> nn.Module:
    """The normalisation applied after a convolution (identity for weight norm / None).

    ``"batch"`` is ``BatchNorm1d``: in training mode it averages over batch *and time*, so an
    output at step t depends (through the statistics) on later steps. In eval mode it is a fixed
    affine map and causal. Use ``"layer"`` or ``"weight"`` where causality during training
    matters.
    """
    if kind == "batch":
        return nn.BatchNorm1d(channels)
    if kind == "layer":
        return ChannelLayerNorm(channels)
    if kind in ("weight", None):
        return nn.Identity()
    raise ValueError(f"norm must be one of {list(NORMS)}, got {kind!r}")


class Gate(nn.Module):
    """Gated activation over channel halves: (N, 2C, T) -> (N, C, T).

    ``"glu"``: a * sigmoid(b) (Dauphin et al. 2017). ``"wavenet"``: tanh(a) * sigmoid(b)
    (van den Oord et al. 2016).
    """

    def __init__(self, kind: str):
        super().__init__()
        if kind not in ("glu", "wavenet"):
            raise ValueError(f"gate must be one of {list(GATES)}, got {kind!r}")
        self.kind = kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "glu":
            return F.glu(x, dim=1)
        a, b = x.chunk(2, dim=1)
        return torch.tanh(a) * torch.sigmoid(b)


def make_dropout(p: float, kind: str) -> nn.Module:
    """Element-wise (``nn.Dropout``) or channel-wise "spatial" dropout (``nn.Dropout1d``,
    which zeroes whole channels of a sequence, as the paper describes)."""
    if kind not in DROPOUT_KINDS:
        raise ValueError(f"dropout_kind must be one of {list(DROPOUT_KINDS)}, got {kind!r}")
    if p == 0:
        return nn.Identity()
    return nn.Dropout(p) if kind == "element" else nn.Dropout1d(p)


class DilatedConv1d(nn.Conv1d):
    """A dilated 1-D convolution that keeps the sequence length: (N, C_in, T) -> (N, C_out, T).

    Causal: the input is left-padded by ``(kernel_size - 1) * dilation`` zeros, so output t
    depends on inputs t - (k-1)d .. t only. Non-causal: the padding is split between both
    sides (see ``receptive_field.conv_padding``).

    Example:
        >>> conv = DilatedConv1d(2, 4, kernel_size=3, dilation=2)
        >>> conv(torch.randn(1, 2, 10)).shape
        torch.Size([1, 4, 10])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        dilation: int = 1,
        causal: bool = True,
        bias: bool = True,
    ):
        super().__init__(in_channels, out_channels, kernel_size, dilation=dilation, bias=bias)
        self.causal = causal
        self.time_padding = conv_padding(kernel_size, dilation, causal)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.time_padding != (0, 0):
            x = F.pad(x, self.time_padding)
        return super().forward(x)


def init_conv_(conv: nn.Conv1d, init_std: float | None) -> None:
    """Weights ~ N(0, init_std) (the paper's init), before any weight-norm parametrization so
    that it really takes effect; ``None`` keeps PyTorch's default."""
    if init_std is not None:
        nn.init.normal_(conv.weight, 0.0, init_std)


class ConvUnit(nn.Module):
    """conv -> norm -> activation (or gate) -> dropout: (N, C_in, T) -> (N, C_out, T)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        dilation: int,
        *,
        causal: bool,
        norm: str | None,
        activation: str,
        gate: str | None,
        dropout: float,
        dropout_kind: str,
        init_std: float | None,
    ):
        super().__init__()
        conv_out = 2 * out_channels if gate else out_channels
        conv = DilatedConv1d(in_channels, conv_out, kernel_size, dilation, causal)
        init_conv_(conv, init_std)
        if norm == "weight":
            conv = parametrizations.weight_norm(conv, name="weight", dim=0)
        self.conv = conv
        self.norm = make_norm(norm, conv_out)
        self.activation = Gate(gate) if gate else make_activation(activation)
        self.dropout = make_dropout(dropout, dropout_kind)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.activation(self.norm(self.conv(x))))


class ResidualBlock(nn.Module):
    """Two dilated conv units plus a residual path: (N, C_in, T) -> (N, C_out, T).

    ``out = act(unit2(unit1(x)) + res(x))`` where ``res`` is a 1x1 convolution only when the
    widths differ, and ``act`` is the block activation (as in the reference code; pass
    ``residual_activation=False`` for the paper's Figure 1 without it).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        dilation: int,
        *,
        causal: bool = True,
        norm: str | None = "weight",
        activation: str = "relu",
        gate: str | None = None,
        dropout: float = 0.0,
        dropout_kind: str = "element",
        residual_activation: bool = True,
        init_std: float | None = 0.01,
    ):
        super().__init__()
        unit = dict(
            kernel_size=kernel_size,
            dilation=dilation,
            causal=causal,
            norm=norm,
            activation=activation,
            gate=gate,
            dropout=dropout,
            dropout_kind=dropout_kind,
            init_std=init_std,
        )
        self.unit1 = ConvUnit(in_channels, out_channels, **unit)
        self.unit2 = ConvUnit(out_channels, out_channels, **unit)
        if in_channels != out_channels:
            self.downsample = nn.Conv1d(in_channels, out_channels, 1)
            init_conv_(self.downsample, init_std)
        else:
            self.downsample = None
        self.out_activation = make_activation(activation) if residual_activation else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = x if self.downsample is None else self.downsample(x)
        return self.out_activation(self.unit2(self.unit1(x)) + res)
