"""LSTM, GRU and vanilla-RNN baselines with the same contract as the TCN.

Same config pattern, same (N, C_in, T) -> (N, hidden_size, T) shapes (or NLC), and the same
caller-owned streaming interface (``init_state`` / ``step``), so the trainer, the heads and
the benchmark treat every model alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from .configs import ConfiguredModel
from .registry import register_model
from .validation import as_int, check_sequence_input

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


def _stream_index(streams, batch_size: int, device) -> torch.Tensor:
    """Normalise an index list or a bool mask of streams into a LongTensor of indices."""
    idx = torch.as_tensor(streams, device=device)
    if idx.numel() == 0 and idx.dim() == 1 and idx.dtype != torch.bool:
        # torch.as_tensor([]) is float32: an empty list means "no streams", not a float index
        return idx.long()
    if idx.dtype == torch.bool:
        if idx.shape != (batch_size,):
            raise ValueError(
                f"a stream mask must have shape ({batch_size},), got {tuple(idx.shape)}"
            )
        return idx.nonzero().flatten()
    if idx.is_floating_point() or idx.dim() > 1:
        raise TypeError(f"streams must be a list of ints or a bool mask, got {streams!r}")
    idx = idx.long().flatten()
    if idx.numel() and (idx.min() < -batch_size or idx.max() >= batch_size):
        raise ValueError(f"stream indices must be in [-{batch_size}, {batch_size}) (negative ones "
                         f"count from the end), got {idx.tolist()}")
    return idx


@dataclass
class RecurrentState:
    """Streaming state of a recurrent baseline: hidden (and cell) states per layer.

    ``h``/``c``: (num_layers, N, hidden_size). Owned by the caller; never in ``state_dict``.
    """

    h: torch.Tensor
    c: torch.Tensor | None
    model_signature: tuple

    @property
    def batch_size(self) -> int:
        return self.h.shape[1]

    def reset(self, streams) -> RecurrentState:
        """Zero the given streams (index list or bool mask) in place; returns ``self``."""
        idx = _stream_index(streams, self.batch_size, self.h.device)
        self.h[:, idx] = 0
        if self.c is not None:
            self.c[:, idx] = 0
        return self

    def select(self, indices) -> RecurrentState:
        """A new state holding the given streams (reordered, duplicated or dropped)."""
        idx = _stream_index(indices, self.batch_size, self.h.device)
        c = None if self.c is None else self.c[:, idx].clone()
        return RecurrentState(self.h[:, idx].clone(), c, self.model_signature)

    def clone(self) -> RecurrentState:
        """An independent copy (``step`` returns a new state, but a caller may edit ``h``)."""
        c = None if self.c is None else self.c.clone()
        return RecurrentState(self.h.clone(), c, self.model_signature)

    def to(self, device) -> RecurrentState:
        c = None if self.c is None else self.c.to(device)
        return RecurrentState(self.h.to(device), c, self.model_signature)


@dataclass(frozen=True)
class RecurrentConfig:
    """Every constructor argument of a recurrent baseline."""

    in_channels: int = field(metadata={"help": "input channels (features per time step)"})
    hidden_size: int = field(default=128, metadata={"help": "hidden units per layer"})
    num_layers: int = field(default=1, metadata={"help": "stacked recurrent layers"})
    dropout: float = field(default=0.0, metadata={"help": "dropout between layers, [0, 1)"})
    layout: str = field(default="NCL", metadata={"help": "NCL (N, C, T) or NLC (N, T, C)"})
    forget_bias: float = field(
        default=0.0,
        metadata={"help": "LSTM only: added to the forget gates' initial bias (1.0 is Keras' "
                          "unit_forget_bias; 0.0 is torch's init)"},
    )

    def __post_init__(self):
        for name in ("in_channels", "hidden_size", "num_layers"):  # plain ints, for the JSON
            object.__setattr__(self, name, as_int(name, getattr(self, name)))
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)):
            raise TypeError(f"dropout must be a float, got {self.dropout!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.layout not in ("NCL", "NLC"):
            raise ValueError(f"layout must be one of ['NCL', 'NLC'], got {self.layout!r}")
        if isinstance(self.forget_bias, bool) or not isinstance(self.forget_bias, (int, float)):
            raise TypeError(f"forget_bias must be a float, got {self.forget_bias!r}")
        if not math.isfinite(self.forget_bias):
            raise ValueError(f"forget_bias must be finite, got {self.forget_bias}")


class RecurrentBaseline(ConfiguredModel, nn.Module):
    """A stacked recurrent network: (N, C_in, T) -> (N, hidden_size, T).

    Weights start at torch's init; an LSTM's ``forget_bias`` is added to its forget gates'
    bias, so that at first it keeps its memory (Gers et al. 2000; Jozefowicz et al. 2015).

    Example:
        >>> model = LSTM(in_channels=1, hidden_size=130)
        >>> model(torch.randn(2, 1, 50)).shape
        torch.Size([2, 130, 50])
    """

    config_class = RecurrentConfig
    cell = "lstm"
    receptive_field = None  # unbounded: every output may depend on the whole past
    lookahead = 0
    stream_delay = 0  # step() outputs are never late (the TCN's contract, for generic callers)

    def __init__(
        self,
        in_channels: int,
        hidden_size: int = 128,
        num_layers: int = 1,
        dropout: float = 0.0,
        layout: str = "NCL",
        forget_bias: float = 0.0,
    ):
        super().__init__()
        self._config = RecurrentConfig(
            in_channels, hidden_size, num_layers, dropout, layout, forget_bias
        )
        if forget_bias and self.cell != "lstm":
            raise ValueError(
                f"forget_bias applies to an LSTM's forget gates; a {self.cell.upper()} has "
                f"none, got forget_bias={forget_bias}")
        cfg = self._config  # its sizes are plain ints (torch's RNNs refuse numpy ints)
        self.rnn = CELLS[self.cell](
            cfg.in_channels, cfg.hidden_size, cfg.num_layers, batch_first=True, dropout=dropout
        )
        if forget_bias:
            h = cfg.hidden_size
            with torch.no_grad():  # gates are ordered (input, forget, cell, output)
                for k in range(cfg.num_layers):
                    getattr(self.rnn, f"bias_ih_l{k}")[h : 2 * h] += forget_bias

    @property
    def out_channels(self) -> int:
        return self._config.hidden_size

    def _run(self, x: torch.Tensor, hidden=None):
        check_sequence_input(x, self.in_channels, self.layout, f"{type(self).__name__} input",
                             dtype=self.rnn.weight_ih_l0.dtype)
        seq = x.transpose(1, 2) if self.layout == "NCL" else x  # (N, T, C)
        y, hidden = self.rnn(seq, hidden)
        return (y.transpose(1, 2) if self.layout == "NCL" else y), hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x)[0]

    # -- streaming ------------------------------------------------------------------------
    def _signature(self) -> tuple:
        c = self._config
        return (type(self).__name__, c.in_channels, c.hidden_size, c.num_layers)

    def init_state(self, batch_size: int) -> RecurrentState:
        """Zero state for ``batch_size`` streams, on the model's device and dtype."""
        batch_size = as_int("batch_size", batch_size)  # TypeError for 2.0 / True
        p = next(self.parameters())
        shape = (self._config.num_layers, batch_size, self._config.hidden_size)
        h = torch.zeros(shape, dtype=p.dtype, device=p.device)
        c = torch.zeros_like(h) if self.cell == "lstm" else None
        return RecurrentState(h, c, self._signature())

    @torch.no_grad()  # streaming is inference: a graph kept in the state would grow per call
    def step(self, x: torch.Tensor, state: RecurrentState):
        """Consume a chunk (N, C_in, t) and return its outputs (N, hidden, t) and the new state."""
        if not isinstance(state, RecurrentState):
            raise TypeError(f"expected a RecurrentState, got {type(state).__name__}")
        if self.training and self.config.dropout > 0 and self.config.num_layers > 1:
            # as TCN.step: dropout between layers would make each step's output random
            raise RuntimeError(f"streaming needs dropout off, but the model is in training mode "
                               f"with dropout={self.config.dropout}: call model.eval() first")
        if state.model_signature != self._signature():
            raise ValueError(
                f"state was made for {state.model_signature}, this model is {self._signature()}"
            )
        n = x.shape[0] if isinstance(x, torch.Tensor) and x.dim() == 3 else None
        if n is not None and n != state.batch_size:
            raise ValueError(f"chunk batch size {n} differs from the state's {state.batch_size}")
        if isinstance(x, torch.Tensor) and x.device != state.h.device:
            raise ValueError(f"chunk is on {x.device}, state on {state.h.device}")
        dtype = next(self.parameters()).dtype
        if state.h.dtype != dtype:
            raise ValueError(f"state is {state.h.dtype} but the model is {dtype}: make the state "
                             f"with this model's init_state after any .to(dtype)")
        hidden = (state.h, state.c) if self.cell == "lstm" else state.h
        y, hidden = self._run(x, hidden)
        if self.cell == "lstm":
            return y, RecurrentState(hidden[0], hidden[1], state.model_signature)
        return y, RecurrentState(hidden, None, state.model_signature)

    @torch.no_grad()
    def flush(self, state: RecurrentState):
        """End the streams: ``(y, state)`` with y empty (N, hidden, 0), as a recurrent model has
        no delayed frames, and every stream of ``state`` reset (in place), as ``TCN.flush``
        does, so callers treat every model alike."""
        if not isinstance(state, RecurrentState):
            raise TypeError(f"expected a RecurrentState, got {type(state).__name__}")
        y = state.h.new_zeros(state.batch_size, self.out_channels, 0)
        if self.layout == "NLC":
            y = y.transpose(1, 2)
        return y, state.reset(list(range(state.batch_size)))


@register_model("lstm")
class LSTM(RecurrentBaseline):
    __doc__ = RecurrentBaseline.__doc__
    cell = "lstm"


@register_model("gru")
class GRU(RecurrentBaseline):
    __doc__ = RecurrentBaseline.__doc__.replace("LSTM(", "GRU(")
    cell = "gru"
    unused_config_keys = ("forget_bias",)  # no forget gate: not a setting a task offers


@register_model("rnn")
class RNN(RecurrentBaseline):
    __doc__ = RecurrentBaseline.__doc__.replace("LSTM(", "RNN(")
    cell = "rnn"
    unused_config_keys = ("forget_bias",)
