"""The Temporal Convolutional Network: ``TCNConfig`` and ``TCN``."""

from __future__ import annotations

import copy
import math
import pickle
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.utils import parametrize

from . import receptive_field as rf
from .layers import (ACTIVATIONS, DROPOUT_KINDS, GATES, INIT_SCOPES, NORMS, ResidualBlock,
                     make_activation)
from .configs import ConfiguredModel
from .registry import register_model
from .validation import as_int, check_cond, check_sequence_input, warn_at_caller

LAYOUTS = ("NCL", "NLC")


def _one_of(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")


@dataclass(frozen=True)
class TCNConfig:
    """Every constructor argument of :class:`TCN`. Frozen: a model's architecture is fixed.

    Example (a variant of a model: same architecture, other dropout):
        >>> import dataclasses
        >>> model = TCN(1, [25] * 8, kernel_size=7)
        >>> model.config.channels, model.config.dropout
        ((25, 25, 25, 25, 25, 25, 25, 25), 0.0)
        >>> variant = TCN.from_config(dataclasses.replace(model.config, dropout=0.1))
        >>> variant.config.dropout, variant.receptive_field
        (0.1, 3061)
    """

    in_channels: int = field(metadata={"help": "input channels (features per time step)"})
    channels: tuple[int, ...] = field(
        metadata={"help": "output width of each residual block, e.g. 25,25,25 or 25*8"}
    )
    kernel_size: int = field(default=2, metadata={"help": "convolution kernel size k"})
    dilations: tuple[int, ...] | None = field(
        default=None, metadata={"help": "dilation of each block (default 2**i)"}
    )
    dropout: float = field(default=0.0, metadata={"help": "dropout probability in [0, 1)"})
    dropout_kind: str = field(
        default="element",
        metadata={"help": "element (nn.Dropout) or channel (spatial, nn.Dropout1d)"},
    )
    norm: str | None = field(
        default="weight", metadata={"help": "weight | batch | layer | none"}
    )
    activation: str = field(default="relu", metadata={"help": "|".join(sorted(ACTIVATIONS))})
    causal: bool = field(default=True, metadata={"help": "causal (left) padding"})
    layout: str = field(default="NCL", metadata={"help": "NCL (N, C, T) or NLC (N, T, C)"})
    gate: str | None = field(
        default=None, metadata={"help": "gated activation: glu | wavenet | none"}
    )
    skip_connections: bool = field(
        default=False, metadata={"help": "WaveNet-style sum of every block's output"}
    )
    residual_activation: bool = field(
        default=True, metadata={"help": "activation after the residual addition"}
    )
    init_std: float | None = field(
        default=0.01, metadata={"help": "conv weights ~ N(0, init_std); none = torch's own init"}
    )
    init_scope: str = field(
        default="all",
        metadata={"help": "convs init_std applies to: all | downsample (only the 1x1 residual "
                          "convs, the others keep torch's own init: the reference code's "
                          "effective init)"},
    )
    low_memory: bool = field(
        default=False, metadata={"help": "recompute block activations in backward"}
    )
    cond_channels: int = field(
        default=0,
        metadata={"help": "size of a global conditioning vector (FiLM in every unit); 0 = none"},
    )

    def __post_init__(self):
        # Stored as plain ints (numpy or tensor ints are converted): the config is saved as JSON.
        object.__setattr__(self, "in_channels", as_int("in_channels", self.in_channels))
        if isinstance(self.channels, (str, bytes)) or not hasattr(self.channels, "__iter__"):
            raise TypeError(f"channels must be a list of ints, got {self.channels!r}")
        channels = tuple(self.channels)
        if not channels:
            raise ValueError("channels must list at least one block width, got []")
        object.__setattr__(self, "channels",
                           tuple(as_int(f"channels[{i}]", c) for i, c in enumerate(channels)))
        object.__setattr__(self, "kernel_size", as_int("kernel_size", self.kernel_size))
        if self.dilations is not None:
            if isinstance(self.dilations, (str, bytes)) or not hasattr(
                self.dilations, "__iter__"
            ):
                raise TypeError(f"dilations must be a list of ints, got {self.dilations!r}")
            dilations = tuple(self.dilations)
            if len(dilations) != len(self.channels):
                raise ValueError(
                    f"dilations must have one entry per block ({len(self.channels)}), "
                    f"got {len(dilations)}: {list(dilations)}"
                )
            object.__setattr__(self, "dilations",
                               tuple(as_int(f"dilations[{i}]", d) for i, d in enumerate(dilations)))
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)):
            raise TypeError(f"dropout must be a float, got {self.dropout!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        for name in ("norm", "gate"):  # "none", as the help text and the CLI spell it, is None
            if getattr(self, name) == "none":
                object.__setattr__(self, name, None)
        _one_of("dropout_kind", self.dropout_kind, DROPOUT_KINDS)
        _one_of("norm", self.norm, NORMS)
        _one_of("activation", self.activation, ACTIVATIONS)
        _one_of("layout", self.layout, LAYOUTS)
        _one_of("gate", self.gate, GATES)
        _one_of("init_scope", self.init_scope, INIT_SCOPES)
        for name in ("causal", "skip_connections", "residual_activation", "low_memory"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")
        object.__setattr__(self, "cond_channels",
                           as_int("cond_channels (0: no conditioning)", self.cond_channels, minimum=0))
        if self.init_std is not None:
            if isinstance(self.init_std, bool) or not isinstance(self.init_std, (int, float)):
                raise TypeError(f"init_std must be a positive float or None, got "
                                f"{type(self.init_std).__name__} {self.init_std!r}")
            if not 0 < self.init_std < math.inf:  # NaN fails both comparisons
                raise ValueError(f"init_std must be a positive float or None, got {self.init_std!r}")

    @property
    def resolved_dilations(self) -> tuple[int, ...]:
        """The dilations actually used (``2**i`` when ``dilations`` is None)."""
        if self.dilations is not None:
            return self.dilations
        return tuple(rf.default_dilations(len(self.channels)))

    @property
    def receptive_field(self) -> int:
        return rf.receptive_field(self.kernel_size, self.resolved_dilations)

    @property
    def lookahead(self) -> int:
        return rf.lookahead(self.kernel_size, self.resolved_dilations, self.causal)

    @property
    def blind_spots(self) -> list[int]:
        return rf.blind_spots(self.kernel_size, self.resolved_dilations, self.causal)


@register_model("tcn")
class TCN(ConfiguredModel, nn.Module):
    """Temporal Convolutional Network (Bai, Kolter & Koltun 2018).

    One residual block per entry of ``channels``; block i has two dilated convolutions with
    dilation ``dilations[i]`` (default ``2**i``), each followed by norm, activation and dropout.

    Shapes:
        input  (N, in_channels, T)  [or (N, T, in_channels) with ``layout="NLC"``], any T >= 1
        output (N, channels[-1], T) [or (N, T, channels[-1])]

    The output at step t depends on inputs t - receptive_field + 1 .. t when ``causal``; with
    ``causal=False`` it also sees up to ``lookahead`` steps ahead.

    ``cond_channels > 0`` conditions the network on one vector per sequence (a speaker, a
    station, a product: static covariates): every conv unit's pre-activation is modulated by a
    :class:`~torchtcn.layers.FiLM` of it, and ``forward`` / ``step`` take ``cond``
    (N, cond_channels). Per-step covariates are extra input channels instead.

    Example:
        >>> model = TCN(in_channels=1, channels=[25] * 8, kernel_size=7)
        >>> model(torch.randn(4, 1, 784)).shape
        torch.Size([4, 25, 784])
        >>> model.receptive_field
        3061
        >>> conditioned = TCN(in_channels=1, channels=[8, 8], cond_channels=4)
        >>> conditioned(torch.randn(2, 1, 50), cond=torch.randn(2, 4)).shape
        torch.Size([2, 8, 50])
    """

    config_class = TCNConfig

    def __init__(
        self,
        in_channels: int,
        channels,
        kernel_size: int = 2,
        dilations=None,
        dropout: float = 0.0,
        dropout_kind: str = "element",
        norm: str | None = "weight",
        activation: str = "relu",
        causal: bool = True,
        layout: str = "NCL",
        gate: str | None = None,
        skip_connections: bool = False,
        residual_activation: bool = True,
        init_std: float | None = 0.01,
        low_memory: bool = False,
        cond_channels: int = 0,
        init_scope: str = "all",
    ):
        super().__init__()
        cfg = TCNConfig(
            in_channels=in_channels,
            channels=channels,
            kernel_size=kernel_size,
            dilations=dilations,
            dropout=dropout,
            dropout_kind=dropout_kind,
            norm=norm,
            activation=activation,
            causal=causal,
            layout=layout,
            gate=gate,
            skip_connections=skip_connections,
            residual_activation=residual_activation,
            init_std=init_std,
            init_scope=init_scope,
            low_memory=low_memory,
            cond_channels=cond_channels,
        )
        self._config = cfg
        self._warn_blind_spots()
        widths = (cfg.in_channels,) + cfg.channels
        self.blocks = nn.ModuleList(
            ResidualBlock(
                widths[i],
                widths[i + 1],
                cfg.kernel_size,
                d,
                causal=cfg.causal,
                norm=cfg.norm,
                activation=cfg.activation,
                gate=cfg.gate,
                dropout=cfg.dropout,
                dropout_kind=cfg.dropout_kind,
                residual_activation=cfg.residual_activation,
                init_std=cfg.init_std,
                init_scope=cfg.init_scope,
                cond_channels=cfg.cond_channels,
            )
            for i, d in enumerate(cfg.resolved_dilations)
        )
        if cfg.skip_connections:
            out = cfg.channels[-1]
            self.skips = nn.ModuleList(
                nn.Identity() if c == out else nn.Conv1d(c, out, 1) for c in cfg.channels
            )
            self.skip_activation = make_activation(cfg.activation)
        else:
            self.skips = None
            self.skip_activation = None

    # -- pickling ---------------------------------------------------------------------------
    def __reduce_ex__(self, protocol):
        """Pickle as config + weights: torch refuses to pickle weight-norm parametrized convs.

        ``torch.save(model)`` / ``pickle`` / multiprocessing then work for every ``norm``. The
        copy keeps the weights (device and dtype included), which parameters are frozen, each
        submodule's train/eval mode and attributes set on the model itself (not on its
        submodules); hooks and ``.grad`` are not carried, and a model holding modules or
        tensors its config does not build (an added submodule or parametrization, a reshaped
        weight) raises ``pickle.PicklingError`` when pickled (``save`` /
        ``load`` remain the safe format: no pickle on load).
        """
        if not any(parametrize.is_parametrized(m) for m in self.modules()):
            return super().__reduce_ex__(protocol)
        fresh = _built_on_meta(type(self), self.config)

        def layout(model) -> dict[str, object]:
            # every tensor's shape (its dtype may differ: .double()) and every submodule's
            # type, by name: parametrize makes a new class per parametrized module
            tensors = [*model.named_parameters(), *model.named_buffers()]
            return {**{n: tuple(t.shape) for n, t in tensors},
                    **{f"{n} (module)": type(m).__name__ for n, m in model.named_modules()}}

        mine, built = layout(self), layout(fresh)
        odd = sorted(n.removesuffix(" (module)") for n in mine.keys() | built.keys()
                     if mine.get(n) != built.get(n))
        if odd:  # a submodule, parametrization, buffer or reshaped tensor added by the caller
            raise pickle.PicklingError(
                f"this TCN holds modules or tensors its config does not build ({odd}): "
                "pickle its state_dict(), or save it with torchtcn.save")
        extra = {k: v for k, v in self.__getstate__().items() if k not in fresh.__dict__}
        frozen = [name for name, p in self.named_parameters() if not p.requires_grad]
        modes = {name: m.training for name, m in self.named_modules()}
        return (_unpickle_tcn, (type(self), self.config, self.state_dict(), frozen, modes, extra))

    def __deepcopy__(self, memo):
        # copy.deepcopy keeps torch's own semantics (hooks, grads, attributes): it copies the
        # state torch's Module.__getstate__ gives (which drops a compiled forward), as it
        # would without the __reduce_ex__ above
        clone = type(self).__new__(type(self))
        memo[id(self)] = clone
        clone.__setstate__(copy.deepcopy(self.__getstate__(), memo))
        return clone

    def __copy__(self):
        clone = type(self).__new__(type(self))  # torch's shallow copy: the same submodules
        clone.__setstate__(self.__getstate__())
        return clone

    # -- facts about the architecture -----------------------------------------------------
    @property
    def out_channels(self) -> int:
        return self._config.channels[-1]

    @property
    def dilations(self) -> tuple[int, ...]:
        return self._config.resolved_dilations

    @property
    def receptive_field(self) -> int:
        """Input steps one output step depends on: 1 + 2 (k - 1) sum(dilations)."""
        return self._config.receptive_field

    @property
    def lookahead(self) -> int:
        """Future input steps one output step sees (0 when causal)."""
        return self._config.lookahead

    @property
    def blind_spots(self) -> list[int]:
        """Lags inside the receptive field that no output sees (holes left by dilations that
        outgrow the blocks below them); empty for the default ``2**i`` dilations. See
        :func:`torchtcn.receptive_field.blind_spots`."""
        return self._config.blind_spots

    def _warn_blind_spots(self) -> None:
        holes = self.blind_spots
        if holes:
            c = self._config
            warn_at_caller(
                f"kernel_size={c.kernel_size} with dilations {list(self.dilations)} leaves "
                f"{len(holes)} of the {self.receptive_field} steps of the receptive field unseen "
                f"(lags {rf.describe_lags(holes)}): the dilations step over them; start at 1 "
                "and grow by at most the span covered so far (the default 2**i leaves none)",
                rf.ReceptiveFieldWarning,
            )

    @property
    def stream_delay(self) -> int:
        """Frames by which :meth:`step` outputs lag its inputs (``lookahead``; 0 when causal)."""
        return self._config.lookahead

    # -- computation ----------------------------------------------------------------------
    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """(N, C_in, T) (or NLC) -> (N, C_out, T); ``cond`` (N, cond_channels) is required
        exactly when the model was built with ``cond_channels > 0``."""
        dtype = next(self.parameters()).dtype
        check_sequence_input(x, self.in_channels, self.layout, "TCN input", dtype=dtype)
        check_cond(cond, self._config.cond_channels, x.shape[0], x, "the TCN")
        if self.layout == "NLC":
            x = x.transpose(1, 2)
        # low_memory: each block keeps only its input for backward and recomputes the rest
        # (dropout masks regenerated from the saved RNG state), see ResidualBlock.forward
        recompute = self._config.low_memory and self.training and torch.is_grad_enabled()
        skip_sum = None
        for i, block in enumerate(self.blocks):
            x = block(x, recompute=recompute, cond=cond)
            if self.skips is not None:
                s = self.skips[i](x)
                skip_sum = s if skip_sum is None else skip_sum + s
        if skip_sum is not None:
            x = self.skip_activation(skip_sum)
        return x.transpose(1, 2) if self.layout == "NLC" else x

    # -- streaming (exact incremental inference; the work is in streaming.py) -------------
    def init_state(self, batch_size: int):
        """A fresh caller-owned :class:`~torchtcn.streaming.TCNState` for ``batch_size``
        streams, on the model's dtype and device. Folds the current weights once."""
        from . import streaming

        return streaming.init_state(self, batch_size)

    def step(self, x: torch.Tensor, state, cond: torch.Tensor | None = None):
        """Consume a chunk (N, C_in, t) (or NLC), any t >= 1: returns ``(y, state)`` with ``y``
        (N, C_out, t); consecutive chunks' outputs concatenate to ``forward`` of the whole
        sequence (``stream_delay`` frames late for non-causal models). A conditioned model
        takes each stream's ``cond`` (N, cond_channels) with every chunk. See
        :func:`torchtcn.streaming.step`.

        Example:
            >>> model = TCN(1, [8, 8], kernel_size=3).eval()
            >>> state = model.init_state(batch_size=2)
            >>> y, state = model.step(torch.randn(2, 1, 5), state)
            >>> y.shape
            torch.Size([2, 8, 5])
        """
        from . import streaming

        return streaming.step(self, x, state, cond)

    def flush(self, state, cond: torch.Tensor | None = None):
        """End the streams: ``(y, state)`` with the last ``stream_delay`` output frames."""
        from . import streaming

        return streaming.flush(self, state, cond)

    def extra_repr(self) -> str:
        c = self._config
        return (
            f"in_channels={c.in_channels}, blocks={len(c.channels)}, kernel_size={c.kernel_size}, "
            f"receptive_field={self.receptive_field}, causal={c.causal}"
            + (f", cond_channels={c.cond_channels}" if c.cond_channels else "")
        )


def _built_on_meta(cls, config) -> TCN:
    """``cls.from_config(config)`` on the meta device: no init, no RNG draw, no warning."""
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        return cls.from_config(config)


def _unpickle_tcn(cls, config, state, frozen, modes, extra=None):
    """Rebuild a pickled :class:`TCN`: built on the meta device (no init, no RNG draw, no
    second blind-spot warning), then the pickled tensors are assigned as its weights."""
    model = _built_on_meta(cls, config)
    model.load_state_dict(state, assign=True)
    for name in frozen:
        model.get_parameter(name).requires_grad_(False)
    for name, module in model.named_modules():
        module.training = modes.get(name, module.training)
    model.__dict__.update(extra or {})  # attributes the caller set on the model
    return model

