"""Building blocks of a TCN: dilated (causal or non-causal) convolution, residual block, and the
factories for normalisation, activation, gating and dropout.

All tensors here are (N, C, T). Causality is by construction: the input is left-padded with
``F.pad`` and fed to an unpadded convolution, never padded on both sides and chomped.
"""

from __future__ import annotations

import contextlib
import functools

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as _module_globals
from torch.utils.checkpoint import checkpoint

from . import fused
from .receptive_field import conv_padding
from .weight_norm import weight_norm

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


class FiLM(nn.Module):
    """Feature-wise linear modulation by a global conditioning vector (Perez et al. 2018):
    ``h * (1 + gamma(cond)) + beta(cond)`` with ``gamma, beta`` one linear map of ``cond``.

    Shapes: h (N, C, T), cond (N, C_cond) -> (N, C, T). The same vector modulates every time
    step, so conditioning never breaks causality. The map starts at zero: a freshly conditioned
    model computes exactly what the unconditioned one does, and learns how to use ``cond``.
    With ``gamma`` fixed at 0 this is WaveNet's global conditioning (a learned per-channel bias).

    Example:
        >>> film = FiLM(cond_channels=3, channels=8)
        >>> film(torch.randn(2, 8, 10), torch.randn(2, 3)).shape
        torch.Size([2, 8, 10])
    """

    def __init__(self, cond_channels: int, channels: int):
        super().__init__()
        self.linear = nn.Linear(cond_channels, 2 * channels)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.linear(cond).unsqueeze(-1).chunk(2, dim=1)
        # not torch.addcmul: the ONNX exporter makes its value=1 constant in the default
        # dtype, which under float64 turned a float32 graph's convs float64
        return h + beta + h * gamma


def _fast_dropout_applies(module: nn.Module, x: torch.Tensor) -> bool:
    return (
        module.training
        and 0.0 < module.p < 1.0
        and not module.inplace
        and x.dim() == 3
        and fused.is_enabled()
        and not fused.tracing()
    )


class Dropout(nn.Dropout):
    """``nn.Dropout`` on (N, C, T) whose training masks are cheaper to draw and to keep (one
    bool an element; see :func:`torchtcn.fused.keep_mask`); same distribution and scale."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _fast_dropout_applies(self, x):
            return fused.dropout(x, self.p, per_channel=False)
        return super().forward(x)


class ChannelDropout(nn.Dropout1d):
    """``nn.Dropout1d`` on (N, C, T): zeroes whole channels of a sequence, one draw per
    (sample, channel) and the same scale ``1 / (1 - p)``; its masks are drawn the same cheap
    way as :class:`Dropout`'s."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _fast_dropout_applies(self, x):
            return fused.dropout(x, self.p, per_channel=True)
        return super().forward(x)


def make_dropout(p: float, kind: str) -> nn.Module:
    """Element-wise (:class:`Dropout`, an ``nn.Dropout``) or channel-wise "spatial" dropout
    (:class:`ChannelDropout`, an ``nn.Dropout1d``, which zeroes whole channels of a sequence,
    as the paper describes)."""
    if kind not in DROPOUT_KINDS:
        raise ValueError(f"dropout_kind must be one of {list(DROPOUT_KINDS)}, got {kind!r}")
    if p == 0:
        return nn.Identity()
    return Dropout(p) if kind == "element" else ChannelDropout(p)


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


#: Which convolutions ``init_std`` initialises: every one, or only the 1x1 residual
#: ("downsample") convolutions. The latter is what locuslab/TCN's code effectively did: its
#: N(0, 0.01) of the weight-normed convolutions was discarded by the weight norm (#1), while
#: the un-normed 1x1 convolutions kept theirs.
INIT_SCOPES = ("all", "downsample")


def init_conv_(conv: nn.Conv1d, init_std: float | None) -> None:
    """Weights ~ N(0, init_std) (the paper's init), before any weight-norm parametrization so
    that it really takes effect; ``None`` keeps PyTorch's default."""
    if init_std is not None:
        nn.init.normal_(conv.weight, 0.0, init_std)


class ConvUnit(nn.Module):
    """conv -> norm -> [FiLM] -> activation (or gate) -> dropout: (N, C_in, T) -> (N, C_out, T).

    With ``cond_channels > 0`` a :class:`FiLM` of the global conditioning vector modulates the
    pre-activation (both halves of a gate), and ``forward`` needs ``cond`` (N, cond_channels).
    """

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
        cond_channels: int = 0,
    ):
        super().__init__()
        conv_out = 2 * out_channels if gate else out_channels
        conv = DilatedConv1d(in_channels, conv_out, kernel_size, dilation, causal)
        init_conv_(conv, init_std)
        if norm == "weight":
            conv = weight_norm(conv)  # finite even when a direction decays to zero
        self.conv = conv
        self.norm = make_norm(norm, conv_out)
        self.activation = Gate(gate) if gate else make_activation(activation)
        self.dropout = make_dropout(dropout, dropout_kind)
        self.film = FiLM(cond_channels, conv_out) if cond_channels else None

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        h = self.norm(self.conv(x))
        if self.film is not None:
            if cond is None:
                raise ValueError(
                    f"this unit is conditioned (cond_channels={self.film.linear.in_features}): "
                    "pass cond (N, cond_channels)")
            h = self.film(h, cond)
        elif cond is not None:
            raise ValueError("cond given to a unit built without conditioning (cond_channels=0)")
        return self.dropout(self.activation(h))


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
        init_scope: str = "all",
        cond_channels: int = 0,
    ):
        super().__init__()
        if init_scope not in INIT_SCOPES:
            raise ValueError(f"init_scope must be one of {list(INIT_SCOPES)}, got {init_scope!r}")
        unit = dict(
            kernel_size=kernel_size,
            dilation=dilation,
            causal=causal,
            norm=norm,
            activation=activation,
            gate=gate,
            dropout=dropout,
            dropout_kind=dropout_kind,
            init_std=init_std if init_scope == "all" else None,
            cond_channels=cond_channels,
        )
        self.unit1 = ConvUnit(in_channels, out_channels, **unit)
        self.unit2 = ConvUnit(out_channels, out_channels, **unit)
        if in_channels != out_channels:
            self.downsample = nn.Conv1d(in_channels, out_channels, 1)
            init_conv_(self.downsample, init_std)
        else:
            self.downsample = None
        self.out_activation = make_activation(activation) if residual_activation else nn.Identity()

    def forward(
        self, x: torch.Tensor, recompute: bool = False, cond: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(N, C_in, T) -> (N, C_out, T). ``recompute``: keep only the input for backward and
        recompute the block's activations there (same gradients, less memory). ``cond``
        (N, cond_channels): the global conditioning vector of a conditioned block.

        When the block is the plain relu / weight-norm kind and gradients are being recorded,
        it runs as one fused autograd node (:class:`torchtcn.fused.FusedBlockFunction`): same
        function and gradients, about a third of the memory, fewer passes over activations.
        (Conditioned blocks take the module path.)
        """
        spec = None if cond is not None else self._fused_spec(x, recompute)
        if spec is not None:
            return self._forward_fused(x, spec)
        if recompute:
            if torch.compiler.is_compiling():
                # compile plans the recompute itself (and takes no contexts but dispatch modes)
                return checkpoint(self._forward_modules, x, cond, use_reentrant=False)
            context_fn = functools.partial(_recompute_contexts, self, fused.is_enabled())
            return checkpoint(self._forward_modules, x, cond, use_reentrant=False,
                              context_fn=context_fn)
        return self._forward_modules(x, cond)

    def _forward_modules(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        # the reference path: every submodule called in turn (hooks, any norm / activation)
        res = x if self.downsample is None else self.downsample(x)
        return self.out_activation(self.unit2(self.unit1(x, cond), cond) + res)

    def _forward_fused(self, x: torch.Tensor, spec: fused.BlockSpec) -> torch.Tensor:
        c1, c2, down = self.unit1.conv, self.unit2.conv, self.downsample
        tensors = [
            x,
            c1.weight,  # through the weight-norm parametrization: computed once per forward
            c1.bias,
            c2.weight,
            c2.bias,
            None if down is None else down.weight,
            None if down is None else down.bias,
        ]
        device_type = x.device.type
        if fused.autocast_enabled(device_type):
            # autocast does not reach inside an autograd.Function: cast as it would for conv1d
            # (float32 only: float64 stays float64)
            dtype = torch.get_autocast_dtype(device_type)
            tensors = [t.to(dtype) if t is not None and t.dtype == torch.float32 else t
                       for t in tensors]
            with torch.autocast(device_type, enabled=False):
                return fused.FusedBlockFunction.apply(*tensors, spec)
        return fused.FusedBlockFunction.apply(*tensors, spec)

    def _fused_spec(self, x: torch.Tensor, recompute: bool) -> fused.BlockSpec | None:
        """The fused block's spec, or None where only the module path is exact (other norms,
        activations or gates, hooks on a submodule, tracing / compiling, inference)."""
        if not (torch.is_grad_enabled() and fused.is_enabled()) or fused.tracing():
            return None
        if x.dim() != 3 or not x.is_floating_point():
            return None
        units = (self.unit1, self.unit2)
        if not all(_plain_relu_unit(u) for u in units):
            return None
        c1, c2 = self.unit1.conv, self.unit2.conv
        if c1.dilation != c2.dilation or c1.time_padding != c2.time_padding:
            return None
        if type(self.out_activation) not in (nn.ReLU, nn.Identity):
            return None
        down = self.downsample
        if down is not None and not (
            type(down) is nn.Conv1d
            and down.kernel_size == (1,)
            and down.stride == (1,)
            and down.padding == (0,)
            and down.dilation == (1,)
            and down.groups == 1
        ):
            return None
        if _has_hooks(self):
            return None
        if (down is None and x.dtype == torch.float32
                and fused.autocast_enabled(x.device.type)):
            # the module path adds a float32 identity residual to the autocast convs' output
            # in float32; the fused node computes in one dtype and would round it
            return None
        (p1, ch1), (p2, ch2) = (_dropout_of(u.dropout) for u in units)
        if p1 is None or p2 is None:
            return None
        return fused.BlockSpec(
            dilation=c1.dilation[0],
            padding=tuple(c1.time_padding),
            p1=p1,
            p2=p2,
            channel1=ch1,
            channel2=ch2,
            residual_relu=type(self.out_activation) is nn.ReLU,
            recompute=recompute,
        )


def _recompute_contexts(block: nn.Module, fused_enabled: bool):
    """``checkpoint``'s contexts for a recomputed block: nothing around the forward, and
    :class:`_AsInForward` around the recompute in backward."""
    return contextlib.nullcontext(), _AsInForward(block, fused_enabled)


class _AsInForward:
    """Replay a block as its forward ran: the same fused switch (``fused.disabled()`` may
    have ended before backward), and batch-norm running statistics as the forward left them
    (the recompute sees the same batch again and must not count it twice).

    Re-enterable (a class, not a generator): a double backward (``create_graph=True``, a
    gradient penalty) recomputes the block once per backward with the same context."""

    def __init__(self, block: nn.Module, fused_enabled: bool):
        self.norms = [m for m in block.modules()
                      if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None]
        self.fused_enabled = fused_enabled
        self._entered: list[tuple[contextlib.AbstractContextManager, list]] = []

    def __enter__(self):
        saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
                 for m in self.norms]
        switch = contextlib.nullcontext() if self.fused_enabled else fused.disabled()
        switch.__enter__()
        self._entered.append((switch, saved))
        return self

    def __exit__(self, *exc):
        switch, saved = self._entered.pop()
        try:
            switch.__exit__(*exc)
        finally:
            with torch.no_grad():
                for m, (mean, var, count) in zip(self.norms, saved):
                    m.running_mean.copy_(mean)
                    m.running_var.copy_(var)
                    m.num_batches_tracked.copy_(count)
        return False


def _plain_relu_unit(unit: nn.Module) -> bool:
    conv = unit.conv
    return (
        type(unit) is ConvUnit
        and isinstance(conv, DilatedConv1d)
        and conv.stride == (1,)
        and conv.padding == (0,)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and type(unit.norm) is nn.Identity
        and type(unit.activation) is nn.ReLU
        and unit.film is None
    )


def _dropout_of(module: nn.Module) -> tuple[float | None, bool]:
    """(active drop probability, drops whole channels); (None, _) if the fused path cannot
    reproduce this module."""
    if type(module) is nn.Identity:
        return 0.0, False
    if isinstance(module, (nn.Dropout, nn.Dropout1d)) and 0.0 <= module.p < 1.0:
        p = float(module.p) if module.training else 0.0
        return p, isinstance(module, nn.Dropout1d)
    return None, False


def _has_hooks(block: nn.Module) -> bool:
    # the fused path skips the submodules' __call__, so any hook there must see the module path
    g = _module_globals
    if (g._global_forward_hooks or g._global_forward_pre_hooks or g._global_backward_hooks
            or g._global_backward_pre_hooks):
        return True
    for m in block.modules():
        if m is not block and (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks
                               or m._backward_pre_hooks):
            return True
    return False
