"""Output heads shared by every model, and the two wrappers that attach them.

- :class:`LastStepHead`: (N, C, T) -> (N, out) from the last step (classification/regression).
- :class:`PerStepHead`: (N, C, T) -> (N, out, T) at every step.
- :class:`MeanPoolHead`: (N, C, T) -> (N, out) from the mean over time (classification).
- :class:`SequenceModel`: any registered body + one of those heads, savable as one model.
- :class:`LanguageModel`: token embedding -> body -> decoder (optionally tied to the embedding).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .baselines import _stream_index
from .fused import autocast_enabled, tracing
from .receptive_field import ReceptiveFieldWarning
from .configs import check_config_type, config_to_dict
from .registry import body_spec, model_from_spec, register_model
from .validation import as_int, checked_lengths, warn_at_caller


class _LinearHead(nn.Module):
    """One ``nn.Linear`` over the channels; subclasses say which time steps it reads."""

    reads_last_step = False  # the prediction comes from the last step alone
    returns_sequence = False  # one output per time step, (N, out_features, T)

    def __init__(self, in_channels: int, out_features: int):
        super().__init__()
        self.linear = nn.Linear(as_int("in_channels", in_channels),
                                as_int("out_features", out_features))

    min_steps = 1  # a head that reduces over time needs a step to read

    def _checked(self, h: torch.Tensor) -> torch.Tensor:
        """``h`` if it is a (N, in_channels, T >= min_steps) tensor; else a ValueError or
        TypeError."""
        if tracing():  # the eager checks are not part of an exported graph
            return h
        if not isinstance(h, torch.Tensor):
            raise TypeError(f"{type(self).__name__} input must be a tensor (N, C, T), got "
                            f"{type(h).__name__}")
        c = self.linear.in_features
        if h.dim() != 3 or h.shape[1] != c or h.shape[2] < self.min_steps:
            raise ValueError(f"{type(self).__name__} input must be (N, {c}, T) with T >= "
                             f"{self.min_steps}, got shape {tuple(h.shape)}")
        weight = self.linear.weight
        # under autocast the linear map casts for itself
        if h.dtype != weight.dtype and not (h.is_floating_point() and autocast_enabled(h.device.type)):
            raise TypeError(f"{type(self).__name__} input must be {weight.dtype} (the head's "
                            f"weights), got {h.dtype}")
        return h


class LastStepHead(_LinearHead):
    """Linear map of the last time step: (N, C, T) -> (N, out_features).

    The heads are what :class:`SequenceModel` puts on a body (``head="last_step"``,
    ``"per_step"``, ``"mean"``); on their own they map body outputs.

    Example:
        >>> import torch
        >>> h = torch.randn(4, 25, 784)                                # body output (N, C, T)
        >>> LastStepHead(25, 10)(h).shape, PerStepHead(25, 3)(h).shape, MeanPoolHead(25, 10)(h).shape
        (torch.Size([4, 10]), torch.Size([4, 3, 784]), torch.Size([4, 10]))
    """

    reads_last_step = True

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.linear(self._checked(h)[:, :, -1])


class PerStepHead(_LinearHead):
    """Linear map at every time step: (N, C, T) -> (N, out_features, T)."""

    returns_sequence = True
    min_steps = 0  # an empty chunk (a causal stream's flush) maps to an empty output

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.linear(self._checked(h).transpose(1, 2)).transpose(1, 2)


class MeanPoolHead(_LinearHead):
    """Linear map of the mean over time: (N, C, T) -> (N, out_features). Every step counts,
    so a sequence longer than the receptive field is still read whole."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.linear(self._checked(h).mean(2))


HEADS = {"last_step": LastStepHead, "per_step": PerStepHead, "mean": MeanPoolHead}


def _spec_field(help_text: str):
    return field(metadata={"help": help_text})


class _WrapperConfig:
    """What the wrapper configs share: their ``body`` spec is a dict, so the config owns a
    private copy of it (an edit to the caller's dict, or to ``model.config.body``, cannot
    make a saved file's config disagree with its weights), and hashes by its JSON form."""

    def _own_body(self) -> None:
        object.__setattr__(self, "body", copy.deepcopy(self.body))

    def __hash__(self) -> int:
        return hash(json.dumps(config_to_dict(self), sort_keys=True))


@dataclass(frozen=True)
class SequenceModelConfig(_WrapperConfig):
    body: dict = _spec_field('the body as {"name": ..., "config": {...}}')
    head: str = field(default="last_step", metadata={"help": "last_step | per_step | mean"})
    out_features: int = field(default=1, metadata={"help": "head outputs"})
    __hash__ = _WrapperConfig.__hash__  # (a dataclass keeps only a hash of its own class body)

    def __post_init__(self):
        self._own_body()
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {sorted(HEADS)}, got {self.head!r}")
        object.__setattr__(self, "out_features", as_int("out_features", self.out_features))


class _BodyField:
    """The body's receptive-field facts, on a model that wraps a body."""

    @property
    def receptive_field(self) -> int | None:
        """The body's (None: unbounded, a recurrent body)."""
        return self.body.receptive_field

    @property
    def lookahead(self) -> int:
        """Future steps an output sees (the body's; 0 for causal and recurrent bodies)."""
        return getattr(self.body, "lookahead", 0)

    @property
    def blind_spots(self) -> list[int]:
        """Lags inside the receptive field no output sees (the body's; see ``TCN``)."""
        return list(getattr(self.body, "blind_spots", []))


@register_model("sequence_model", sequence_model=False)
class SequenceModel(_BodyField, nn.Module):
    """A registered body (TCN, LSTM, ...) followed by a shared head.

    Shapes: input as the body's (N, C_in, T) (or NLC); output (N, out_features) for
    ``head="last_step"`` and ``head="mean"`` (mean over time), (N, out_features, T) for
    ``head="per_step"``.

    A last-step head given sequences longer than the body's receptive field raises a
    :class:`ReceptiveFieldWarning` (once per model).

    Example:
        >>> import torchtcn
        >>> body = torchtcn.TCN(1, [25] * 8, kernel_size=7)
        >>> model = SequenceModel(body, head="last_step", out_features=10)
        >>> model(torch.randn(2, 1, 784)).shape
        torch.Size([2, 10])
    """

    config_class = SequenceModelConfig

    def __init__(self, body: nn.Module, head: str = "last_step", out_features: int = 1):
        super().__init__()
        self._config = SequenceModelConfig(body_spec(body), head, out_features)
        self.body = body
        self.head = HEADS[head](body.out_channels, out_features)
        self._warned = False

    @property
    def config(self) -> SequenceModelConfig:
        return dataclasses.replace(self._config)  # a copy: its body dict is the caller's to edit

    @classmethod
    def from_config(cls, config: SequenceModelConfig) -> SequenceModel:
        check_config_type(cls, config)
        return cls(model_from_spec(config.body), config.head, config.out_features)

    def forward(
        self,
        x: torch.Tensor,
        lengths: torch.Tensor | None = None,
        cond: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Apply the body, then the head.

        Args:
            x: (N, C_in, T), or (N, T, C_in) for an NLC body.
            lengths: optional (N,) valid lengths of a right-padded batch of variable-length
                sequences (each in 1..T). The last-step head then reads step ``lengths - 1``
                of each sequence, the mean head averages the valid steps only, and the
                per-step head's outputs at padded steps are zero.
                Because the body is causal, the padding never reaches a valid step: every
                output equals the one for that sequence run alone, unpadded.
            cond: (N, cond_channels) conditioning vectors, for a TCN body built with
                ``cond_channels > 0``.

        Example:
            >>> import torchtcn
            >>> m = SequenceModel(torchtcn.TCN(1, [8, 8], kernel_size=4), "last_step", 3)
            >>> m(torch.randn(2, 1, 10), lengths=torch.tensor([10, 4])).shape
            torch.Size([2, 3])
        """
        h = self.body(x, **self._cond_kwargs(cond))
        if self.body.layout == "NLC":
            h = h.transpose(1, 2)
        valid = None if lengths is None else self._valid_steps(lengths, h)
        if self.head.reads_last_step:
            # (an empty batch has no step to check; an export's trace warns no user, and
            # setting _warned there would silence the model's first real call)
            if not self._warned and h.shape[0] and not tracing():
                self._check_coverage(h.shape[2] if valid is None else int(valid.sum(1).max()))
            if valid is not None:  # the last valid step of each sequence
                last = (valid.sum(1) - 1).view(-1, 1, 1).expand(-1, h.shape[1], 1)
                h = h.gather(2, last)
            return self.head(h)
        if self._pools:
            if valid is None:
                return self.head(h)
            total = h.masked_fill(~valid.unsqueeze(1), 0.0).sum(2)
            return self.head.linear(total / valid.sum(1, keepdim=True).to(h.dtype))
        y = self.head(h)
        return y if valid is None else y.masked_fill(~valid.unsqueeze(1), 0.0)

    def _cond_kwargs(self, cond) -> dict:
        # only a TCN body can be conditioned; it checks cond itself
        if cond is None:
            return {}
        if not hasattr(getattr(self.body, "config", None), "cond_channels"):
            raise ValueError(
                f"cond was given, but the {type(self.body).__name__} body takes no "
                "conditioning: use a TCN body with cond_channels > 0")
        return {"cond": cond}

    def _valid_steps(self, lengths, h: torch.Tensor) -> torch.Tensor:
        """(N, T) bool: True at the valid steps of each sequence; checks ``lengths``."""
        if getattr(self.body, "lookahead", 0):
            raise ValueError(
                f"lengths needs a causal body: this one sees {self.body.lookahead} steps ahead, "
                "so padding would reach the valid steps near each sequence's end; batch "
                "sequences of one length instead")
        n, _, t = h.shape
        lengths = checked_lengths(lengths, n, t).to(h.device)
        return torch.arange(t, device=h.device) < lengths.unsqueeze(1)

    # -- streaming: the body's state, the head applied to each new frame -----------------
    @property
    def stream_delay(self) -> int:
        """Frames by which :meth:`step` outputs lag its inputs (the body's; 0 when causal)."""
        return getattr(self.body, "stream_delay", 0)

    def init_state(self, batch_size: int):
        """The body's streaming state for ``batch_size`` streams (see ``TCN.init_state``);
        for the mean head, wrapped in a :class:`PooledState` with the running sums."""
        body_state = self.body.init_state(batch_size)
        if self._pools:
            p = next(self.head.parameters())
            counter = torch.zeros(batch_size, dtype=torch.long, device=p.device)
            return PooledState(body_state, p.new_zeros(batch_size, self.body.out_channels),
                               counter, counter.clone())
        return body_state

    @property
    def _pools(self) -> bool:
        return not (self.head.reads_last_step or self.head.returns_sequence)

    @torch.no_grad()  # streaming is inference only (as the body's step)
    def step(self, x: torch.Tensor, state, cond: torch.Tensor | None = None):
        """Consume a chunk (N, C_in, t): returns ``(y, state)``, ``y`` (N, out_features, t);
        ``cond`` as for :meth:`forward`, with every chunk.

        A per-step head gives exactly the frames ``forward`` gives for the whole sequence. A
        last-step or mean head gives, at every frame, the prediction for the sequence ending
        there (so the last frame equals ``forward`` of everything streamed so far).

        Example:
            >>> import torchtcn
            >>> m = SequenceModel(torchtcn.TCN(1, [8, 8]), "per_step", 2).eval()
            >>> y, state = m.step(torch.randn(3, 1, 4), m.init_state(3))
            >>> y.shape
            torch.Size([3, 2, 4])
        """
        kwargs = self._cond_kwargs(cond)
        if not self._pools:
            h, state = self.body.step(x, state, **kwargs)
            return self._head_frames(h, None), state
        self._check_pooled_state(state)
        h, state.body = self.body.step(x, state.body, **kwargs)
        return self._head_frames(h, state), state

    @torch.no_grad()
    def flush(self, state, cond: torch.Tensor | None = None):
        """End the streams: ``(y, state)`` with the last ``stream_delay`` frames (see
        ``TCN.flush``), empty for causal bodies; afterwards every stream is reset."""
        kwargs = self._cond_kwargs(cond)
        pooled = state if self._pools else None
        if pooled is not None:
            self._check_pooled_state(state)
            state = state.body
        if hasattr(self.body, "flush"):
            h, state = self.body.flush(state, **kwargs)
        else:
            h = torch.zeros(state.batch_size, self.body.out_channels, 0, dtype=state.h.dtype,
                            device=state.h.device)
        if pooled is not None:
            pooled.body = state
            y = self._head_frames(h, pooled)  # reads the running mean, so before the reset
            return y, pooled.reset(list(range(pooled.batch_size)))
        return self._head_frames(h, None), state

    def _head_frames(self, h: torch.Tensor, pooled: PooledState | None) -> torch.Tensor:
        if self.body.layout == "NLC":
            h = h.transpose(1, 2)
        if pooled is not None:  # the running mean at every frame, then the linear map
            # a lagging (non-causal) body's first stream_delay frames are before time 0: skip them
            t = h.shape[2]
            valid = pooled.frames.unsqueeze(1) + torch.arange(t, device=h.device) >= self.stream_delay
            counts = pooled.count.unsqueeze(1) + valid.cumsum(1)
            sums = pooled.total.unsqueeze(2) + h.masked_fill(~valid.unsqueeze(1), 0.0).cumsum(2)
            if t:
                pooled.total, pooled.count = sums[:, :, -1].clone(), counts[:, -1].clone()
                pooled.frames = pooled.frames + t
            h = sums / counts.clamp(min=1).unsqueeze(1).to(h.dtype)
        if not self.head.returns_sequence:
            return self.head.linear(h.transpose(1, 2)).transpose(1, 2)
        return self.head(h)

    def _check_pooled_state(self, state) -> None:
        if not isinstance(state, PooledState):
            raise TypeError(f"a mean-head SequenceModel streams with the PooledState from its "
                            f"init_state, got {type(state).__name__}")

    def _check_coverage(self, length: int) -> None:
        rf = self.receptive_field
        if rf is None:
            return
        # the last step sees rf - lookahead steps: itself and its history (a non-causal
        # body spends the rest of its field on a future the last step does not have)
        seen = rf - self.lookahead
        if length > seen:
            self._warned = True
            what = f"the receptive field ({rf})" if seen == rf else (
                f"the last step's history ({seen} of the receptive field's {rf} steps; the "
                "rest look ahead)")
            warn_at_caller(
                f"sequences of length {length} are longer than {what}: the last step cannot "
                f"see the first {length - seen} inputs",
                ReceptiveFieldWarning,
            )


@dataclass
class PooledState:
    """Streaming state of a mean-head :class:`SequenceModel`: the body's state, and per stream
    the sum of the body's outputs so far (N, C), their count (N,) and the frames the body has
    emitted (N,; more than ``count`` by the body's ``stream_delay``). Caller-owned, like the
    body's; ``reset`` / ``select`` / ``to`` act on every part."""

    body: Any
    total: torch.Tensor
    count: torch.Tensor
    frames: torch.Tensor

    @property
    def batch_size(self) -> int:
        return self.total.shape[0]

    def reset(self, streams) -> PooledState:
        """Restart the given streams (index list or bool mask) in place; returns ``self``."""
        self.body.reset(streams)
        idx = _stream_index(streams, self.batch_size, self.total.device)
        self.total[idx] = 0
        self.count[idx] = 0
        self.frames[idx] = 0
        return self

    def select(self, indices) -> PooledState:
        """A new state holding the given streams (reordered, duplicated or dropped)."""
        idx = _stream_index(indices, self.batch_size, self.total.device)
        return PooledState(self.body.select(indices), self.total[idx].clone(),
                           self.count[idx].clone(), self.frames[idx].clone())

    def clone(self) -> PooledState:
        """An independent copy (``step`` updates a state in place)."""
        return self.select(list(range(self.batch_size)))

    def to(self, device) -> PooledState:
        return PooledState(self.body.to(device), self.total.to(device), self.count.to(device),
                           self.frames.to(device))

    def __repr__(self) -> str:
        return f"PooledState(batch_size={self.batch_size}, body={self.body!r})"


@dataclass(frozen=True)
class LanguageModelConfig(_WrapperConfig):
    body: dict = _spec_field('the body as {"name": ..., "config": {...}}')
    vocab_size: int = field(default=10000, metadata={"help": "number of tokens"})
    tie_weights: bool = field(default=True, metadata={"help": "decoder shares the embedding"})
    embed_dropout: float = field(default=0.0, metadata={"help": "dropout on embeddings"})
    __hash__ = _WrapperConfig.__hash__

    def __post_init__(self):
        self._own_body()
        object.__setattr__(self, "vocab_size", as_int("vocab_size", self.vocab_size))
        if not isinstance(self.tie_weights, bool):
            raise TypeError(f"tie_weights must be a bool, got {self.tie_weights!r}")
        dropout = self.embed_dropout
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)):
            raise TypeError(f"embed_dropout must be a float, got {dropout!r}")
        if not 0.0 <= self.embed_dropout < 1.0:
            raise ValueError(f"embed_dropout must be in [0, 1), got {self.embed_dropout}")


@register_model("language_model", sequence_model=False)
class LanguageModel(_BodyField, nn.Module):
    """Token embedding -> body -> linear decoder at every step.

    Shapes: tokens (N, T) int64 -> logits (N, vocab_size, T), ready for
    ``F.cross_entropy(logits, targets)`` with targets (N, T). The embedding width is the body's
    ``in_channels``; tying needs ``body.out_channels == body.in_channels``.

    Example:
        >>> import torchtcn
        >>> body = torchtcn.TCN(32, [64, 64, 32], kernel_size=3)
        >>> lm = LanguageModel(body, vocab_size=100)
        >>> lm(torch.randint(0, 100, (2, 20))).shape
        torch.Size([2, 100, 20])
    """

    config_class = LanguageModelConfig

    def __init__(
        self,
        body: nn.Module,
        vocab_size: int,
        tie_weights: bool = True,
        embed_dropout: float = 0.0,
    ):
        super().__init__()
        self._config = LanguageModelConfig(body_spec(body), vocab_size, tie_weights, embed_dropout)
        cond_channels = getattr(getattr(body, "config", None), "cond_channels", 0)
        if cond_channels:  # forward, step and generate pass no cond
            raise ValueError(f"a LanguageModel takes no conditioning, but its body has "
                             f"cond_channels={cond_channels}: build the body without it")
        embed_dim = body.in_channels
        if tie_weights and body.out_channels != embed_dim:
            raise ValueError(
                f"tie_weights needs the body's out_channels ({body.out_channels}) to equal its "
                f"in_channels = embedding width ({embed_dim})"
            )
        self.body = body
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.embed_dropout = nn.Dropout(embed_dropout) if embed_dropout else nn.Identity()
        self.decoder = nn.Linear(body.out_channels, vocab_size)
        nn.init.normal_(self.embedding.weight, 0.0, 0.01)
        nn.init.zeros_(self.decoder.bias)
        if tie_weights:
            self.decoder.weight = self.embedding.weight

    @property
    def config(self) -> LanguageModelConfig:
        return dataclasses.replace(self._config)  # a copy: its body dict is the caller's to edit

    @classmethod
    def from_config(cls, config: LanguageModelConfig) -> LanguageModel:
        check_config_type(cls, config)
        kwargs: dict[str, Any] = {
            f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name != "body"
        }
        return cls(model_from_spec(config.body), **kwargs)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, T) int64 -> body input in the body's layout."""
        if not isinstance(tokens, torch.Tensor):
            raise TypeError(f"tokens must be a torch.Tensor, got {type(tokens).__name__}")
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be 2-D (N, T), got shape {tuple(tokens.shape)}")
        if tokens.shape[1] == 0 and not tracing():  # the body would name the embedded shape
            raise ValueError(f"tokens must have T >= 1 steps, got shape {tuple(tokens.shape)}")
        if tokens.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"tokens must be int64 or int32, got dtype {tokens.dtype}")
        if tokens.device.type == "cpu" and tokens.numel() and not tracing():
            # Checked eagerly on CPU only: on a GPU reading the extremes back would stall every
            # step, and a traced or compiled graph would break (or bake the check in) here.
            lo, hi = (int(v) for v in torch.aminmax(tokens))
            vocab = self.embedding.num_embeddings
            if lo < 0 or hi >= vocab:
                raise ValueError(f"token ids must be in [0, {vocab}) (vocab_size), got min {lo}, max {hi}")
        e = self.embed_dropout(self.embedding(tokens))  # (N, T, E)
        return e if self.body.layout == "NLC" else e.transpose(1, 2)

    def decode(self, h: torch.Tensor) -> torch.Tensor:
        """Body output (body layout) -> logits (N, vocab_size, T)."""
        if self.body.layout == "NCL":
            h = h.transpose(1, 2)
        return self.decoder(h).transpose(1, 2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, T) token ids -> logits (N, vocab_size, T)."""
        return self.decode(self.body(self.embed(tokens)))

    # -- streaming -----------------------------------------------------------------------
    @property
    def stream_delay(self) -> int:
        """Frames by which :meth:`step` logits lag the tokens (the body's; 0 when causal)."""
        return getattr(self.body, "stream_delay", 0)

    def init_state(self, batch_size: int):
        """The body's streaming state for ``batch_size`` token streams."""
        return self.body.init_state(batch_size)

    @torch.no_grad()  # streaming is inference only (as the body's step)
    def step(self, tokens: torch.Tensor, state):
        """Consume a token chunk (N, t): returns ``(logits, state)``, logits (N, vocab, t),
        equal to ``forward`` of the whole token sequence frame for frame.

        Example:
            >>> import torchtcn
            >>> lm = LanguageModel(torchtcn.TCN(8, [8, 8]), vocab_size=20).eval()
            >>> logits, state = lm.step(torch.tensor([[3, 4, 5]]), lm.init_state(1))
            >>> logits.shape
            torch.Size([1, 20, 3])
        """
        if self.training and self.config.embed_dropout > 0:
            raise RuntimeError(
                f"streaming needs dropout off, but the model is in training mode with "
                f"embed_dropout={self.config.embed_dropout}: call model.eval() first"
            )
        h, state = self.body.step(self.embed(tokens), state)
        return self.decode(h), state

    @torch.no_grad()
    def flush(self, state):
        """End the streams: ``(logits, state)`` for the last ``stream_delay`` frames; afterwards
        every stream is reset."""
        h, state = self.body.flush(state)
        return self.decode(h), state
