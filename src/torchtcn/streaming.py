"""Exact incremental (streaming) inference for :class:`~torchtcn.TCN`.

A TCN output frame depends on a bounded window of past inputs, so a stream can be processed
chunk by chunk if every convolution remembers the last ``(k - 1) * d`` inputs it saw. This
module keeps that memory in a caller-owned :class:`TCNState` and runs the network on new
frames only:

    >>> import torch, torchtcn
    >>> model = torchtcn.TCN(1, [25] * 8, kernel_size=7).eval()
    >>> x = torch.randn(2, 1, 50)
    >>> state = model.init_state(batch_size=2)
    >>> y1, state = model.step(x[:, :, :20], state)
    >>> y2, state = model.step(x[:, :, 20:], state)
    >>> torch.allclose(torch.cat([y1, y2], 2), model(x), atol=1e-6)
    True

How it works (see ``docs/streaming.md``):

* **Prepared weights.** :func:`prepare` folds weight norm (``conv.weight`` is the effective
  weight) and eval-mode batch norm into each convolution once, and caches the result per model;
  a step checks that no parameter changed since (``Tensor._version`` and storage address) and
  re-folds if one did.
* **One ring buffer.** Every convolution's history lives in one preallocated tensor
  ``buf`` of shape (slots, C_max, N) (time-major, channels padded to the widest layer), each
  convolution owning ``(k - 1) * d`` consecutive slots used as a ring indexed by the global
  frame counter. Nothing grows and nothing is concatenated on the hot path.
* **Fast single-frame step.** For a causal model and ``t == 1`` the step gathers *all* past taps
  of *all* layers with one ``index_select`` (their indices are tabulated per ring position)
  into a preallocated work tensor, then walks the layers doing one ``addmm`` per convolution
  (its k taps, the current one written there by the layer below) and one activation, and
  writes all new inputs back with one ``index_copy_``. About three tensor ops per
  convolution, none of which allocates on the ring.
* **Chunks.** Any ``t >= 1`` (and every non-causal model) goes through the general path:
  per convolution, gather its window from the ring, run ``conv1d`` on window + chunk, write the
  newest frames back.
* **Non-causal models** stream with a delay of ``stream_delay = model.lookahead`` frames: a
  convolution with right padding ``R`` is run as a causal one whose output is ``R`` frames
  late; residual and skip paths are delayed to match (delay lines in the same ring), and
  frames at negative times (before a stream started) or after its end (while flushing) are
  masked to zero, which is exactly the zero padding of the full forward pass. ``step`` returns
  one output frame per input frame: the frame ``stream_delay`` steps in the past (zeros until
  the stream is that old). :func:`flush` ends the streams and returns their last
  ``stream_delay`` frames.

Streaming is inference only: no gradients flow through ``step``; dropout must be off (call
``model.eval()``) and batch norm must use its running statistics (eval mode).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import weakref
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from . import receptive_field as rf
from .baselines import _stream_index
from .layers import Gate
from .validation import as_int, check_cond

# Ring-index tables are precomputed for every ring position when the positions repeat within
# this many frames (lcm of the ring sizes); otherwise indices are computed per step.
_MAX_TABLE_PERIOD = 1 << 14


# -- prepared (folded) weights ----------------------------------------------------------------
@dataclass
class _Line:
    """One history line in the ring: a convolution's input history or a delay line."""

    channels: int
    span: int  # frames remembered ((k - 1) * d for a conv, the delay for a delay line)
    slot: int  # first slot in the ring
    in_delay: int = 0  # frames by which this line's input lags the model input (non-causal)


@dataclass
class _Conv:
    """A dilated convolution with weight norm and eval-mode batch norm folded in."""

    weight: torch.Tensor  # (C_out, C_in, k)
    bias: torch.Tensor  # (C_out,)
    dilation: int
    line: _Line
    layer_norm: tuple | None  # (weight, bias, eps, (C,)): per-frame layer norm over channels
    act: object  # callable on (..., C, N) tensors, channel dim -2; None = identity
    gate: str | None  # "glu" | "wavenet" | None (then ``act`` applies)
    film: tuple | None = None  # (weight (2 C_out, C_cond), bias) of the unit's FiLM map


@dataclass
class _Block:
    conv1: _Conv
    conv2: _Conv
    down: tuple | None  # (weight (C_out, C_in), bias (C_out,)) of the 1x1 residual conv
    out_act: object
    res_delay: _Line | None  # delays the residual path by conv1's + conv2's right padding
    skip: tuple | None  # (weight, bias) of the 1x1 skip conv, or None for identity
    skip_delay: _Line | None  # aligns this block's skip output with the model output
    out_delay: int  # delay of this block's output relative to the model input


@dataclass
class StreamPlan:
    """Everything a step needs, prepared once from a model's weights (see :func:`prepare`)."""

    signature: tuple
    blocks: list
    skip_act: object
    in_channels: int
    out_channels: int
    layout: str
    delay: int
    slots: int
    c_max: int
    dtype: torch.dtype
    device: torch.device
    sources: list  # the model's parameters and buffers, to notice in-place updates
    versions: list  # their _fingerprint at prepare time
    needs_mask: bool
    has_skips: bool
    cond_channels: int = 0
    # every unit's FiLM map stacked into one (sum 2 C_out, C_cond) linear map, and its row
    # count per unit: one matmul per step conditions the whole network
    film: tuple | None = None
    film_rows: list = field(default_factory=list)
    fast: dict | None = None  # tensors of the single-frame fast path (causal models)
    mask_delays: list = field(default_factory=list)

    def is_current(self) -> bool:
        # ``model.to(...)``/``.double()`` swap ``param.data`` without bumping versions.
        first = self.sources[0]
        if first.dtype != self.dtype or first.device != self.device:
            return False
        return _fingerprint(self.sources) == self.versions


def _fingerprint(sources: list) -> list:
    # the version counter sees in-place ops (optimizer steps, load_state_dict); the storage
    # address sees ``p.data = new`` (vector_to_parameters). Neither sees a write through
    # ``p.data`` in place or a new Parameter object: after those, call ``prepare(model)``.
    return [(t._version, t.data_ptr()) for t in sources]


_PLANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

_ACT_FUNCS = {
    nn.ReLU: lambda m: torch.relu,
    nn.Tanh: lambda m: torch.tanh,
    nn.Sigmoid: lambda m: torch.sigmoid,
    nn.SiLU: lambda m: F.silu,
    nn.GELU: lambda m: functools.partial(F.gelu, approximate=m.approximate),
    nn.ELU: lambda m: functools.partial(F.elu, alpha=m.alpha),
    nn.LeakyReLU: lambda m: functools.partial(F.leaky_relu, negative_slope=m.negative_slope),
    nn.Identity: lambda m: None,
}


def _act_fn(module: nn.Module):
    """A plain function for an elementwise activation module (skips ``Module.__call__``)."""
    make = _ACT_FUNCS.get(type(module))
    return make(module) if make is not None else module


def architecture_signature(model) -> tuple:
    """What a state depends on: everything in the config except training-only settings."""
    cfg = model.config
    arch = dataclasses.replace(cfg, dropout=0.0, dropout_kind="element", low_memory=False)
    # init settings only shape the starting weights; None dilations mean their 2**i default
    arch = dataclasses.replace(arch, init_std=None, init_scope="all", layout="NCL",
                               dilations=cfg.resolved_dilations)
    return ("TCN", arch)


def check_streamable(model) -> None:
    """Raise if ``model`` is in a mode where step-by-step outputs would not be deterministic."""
    if not model.training:
        return
    if model.config.dropout > 0:
        raise RuntimeError(
            f"streaming needs dropout off, but the model is in training mode with "
            f"dropout={model.config.dropout}: call model.eval() first"
        )
    if model.config.norm == "batch":
        raise RuntimeError(
            "streaming needs batch norm's running statistics, but the model is in training "
            "mode (batch statistics mix streams and time steps): call model.eval() first"
        )


def _fold_conv(unit, line: _Line) -> _Conv:
    conv = unit.conv
    w = conv.weight.detach().clone()  # the effective weight (weight norm included)
    b = conv.bias.detach().clone() if conv.bias is not None else w.new_zeros(w.shape[0])
    layer_norm = None
    norm = unit.norm
    if isinstance(norm, nn.modules.batchnorm._BatchNorm):  # SyncBatchNorm too (after DDP)
        scale = torch.rsqrt(norm.running_var.detach() + norm.eps)
        if norm.weight is not None:
            scale = scale * norm.weight.detach()
        shift = -norm.running_mean.detach() * scale
        if norm.bias is not None:
            shift = shift + norm.bias.detach()
        w = w * scale[:, None, None]
        b = b * scale + shift
    elif isinstance(norm, nn.Identity):
        pass
    elif hasattr(norm, "norm") and isinstance(norm.norm, nn.LayerNorm):
        ln = norm.norm
        lw = ln.weight.detach().clone() if ln.weight is not None else None
        lb = ln.bias.detach().clone() if ln.bias is not None else None
        layer_norm = (lw, lb, ln.eps, tuple(ln.normalized_shape))
    else:
        raise TypeError(f"cannot stream a norm of type {type(norm).__name__}")
    gate = unit.activation.kind if isinstance(unit.activation, Gate) else None
    act = None if gate else _act_fn(unit.activation)
    film = None
    if unit.film is not None:
        lin = unit.film.linear
        film = (lin.weight.detach().clone(), lin.bias.detach().clone())
    return _Conv(w, b, conv.dilation[0], line, layer_norm, act, gate, film)


def prepare(model) -> StreamPlan:
    """Fold ``model``'s current weights into a :class:`StreamPlan` and cache it for the model.

    Called by :func:`init_state`; a step re-prepares automatically when a parameter or buffer
    was modified in place since (optimizer step, ``load_state_dict``) or given new storage
    (``p.data = ...``, ``vector_to_parameters``). Call it yourself after changes a step cannot
    see: writing through ``p.data`` in place (``p.data.mul_(2)``), or replacing Parameter
    objects (``load_state_dict(..., assign=True)``).
    """
    check_streamable(model)
    cfg = model.config
    k = cfg.kernel_size
    lines: list[_Line] = []

    def new_line(channels, span, in_delay=0):
        line = _Line(channels, span, sum(ln.span for ln in lines), in_delay)
        lines.append(line)
        return line

    blocks = []
    delay = 0
    widths = (cfg.in_channels,) + cfg.channels
    for i, block in enumerate(model.blocks):
        d = cfg.resolved_dilations[i]
        right = rf.conv_padding(k, d, cfg.causal)[1]
        c1 = _fold_conv(block.unit1, new_line(widths[i], (k - 1) * d, delay))
        c2 = _fold_conv(block.unit2, new_line(widths[i + 1], (k - 1) * d, delay + right))
        down = None
        if block.downsample is not None:
            ds = block.downsample
            down = (ds.weight.detach()[:, :, 0].clone(), ds.bias.detach().clone())
        blocks.append(_Block(c1, c2, down, _act_fn(block.out_activation), None, None, None, 0))
        delay += 2 * right
        blocks[-1].out_delay = delay
    assert delay == model.lookahead, (delay, model.lookahead)
    # Delay lines (non-causal only) go after the conv lines so conv slots stay contiguous.
    for i, b in enumerate(blocks):
        r = b.out_delay - (blocks[i - 1].out_delay if i else 0)
        if r:
            b.res_delay = new_line(widths[i + 1] if b.down is not None else widths[i], r)
    if model.skips is not None:
        for i, (b, s) in enumerate(zip(blocks, model.skips)):
            if isinstance(s, nn.Conv1d):
                b.skip = (s.weight.detach()[:, :, 0].clone(), s.bias.detach().clone())
            if delay - b.out_delay:
                b.skip_delay = new_line(cfg.channels[-1], delay - b.out_delay)
    skip_act = _act_fn(model.skip_activation) if model.skips is not None else None

    p = next(model.parameters())
    sources = list(model.parameters()) + list(model.buffers())
    plan = StreamPlan(
        signature=architecture_signature(model),
        blocks=blocks,
        skip_act=skip_act,
        in_channels=cfg.in_channels,
        out_channels=cfg.channels[-1],
        layout=cfg.layout,
        delay=delay,
        slots=sum(ln.span for ln in lines),
        c_max=max(ln.channels for ln in lines),
        dtype=p.dtype,
        device=p.device,
        sources=sources,
        versions=_fingerprint(sources),
        needs_mask=delay > 0,
        has_skips=model.skips is not None,
        mask_delays=sorted({ln.in_delay for ln in lines if ln.in_delay}),
        cond_channels=cfg.cond_channels,
    )
    if cfg.cond_channels:
        films = [c.film for b in blocks for c in (b.conv1, b.conv2)]
        plan.film = (torch.cat([w for w, _ in films]), torch.cat([b for _, b in films]))
        plan.film_rows = [w.shape[0] for w, _ in films]
    if cfg.causal:
        plan.fast = _prepare_fast(plan, k)
    _PLANS[model] = plan
    return plan


def _prepare_fast(plan: StreamPlan, k: int) -> dict:
    """Per-conv flattened weights and ring-index tables of the single-frame step (causal).

    Conv j reads a (k, C_max, N) block of a work tensor ``cols``: taps 0 .. k-2 are gathered
    from the ring, tap k-1 is the current input, written there by the layer below; so every
    convolution is one ``addmm`` of its (C_out, k * C_max) weight with that block. (One small
    matmul per layer on purpose: a batched matmul over layers would be a single op, but it
    goes through OpenMP and stalls for milliseconds on a busy machine.)
    """
    convs = [c for b in plan.blocks for c in (b.conv1, b.conv2)]
    J, c_max = len(convs), plan.c_max
    w_full = []
    for c in convs:
        co, ci, _ = c.weight.shape
        w = c.weight.new_zeros(co, k, c_max)
        w[:, :, :ci] = c.weight.permute(0, 2, 1)
        w_full.append(w.reshape(co, k * c_max))
    fast = {"convs": convs, "J": J, "k": k, "w_full": w_full,
            "bias": [c.bias[:, None] for c in convs]}
    if k == 1:
        return fast
    dev = plan.device
    # Past taps m = 0 .. k-2 of conv j read the input (k - 1 - m) * d frames back.
    back = torch.tensor(
        [(k - 1 - m) * c.dilation for c in convs for m in range(k - 1)], dtype=torch.long
    )
    span_g = torch.tensor([c.line.span for c in convs for _ in range(k - 1)], dtype=torch.long)
    slot_g = torch.tensor([c.line.slot for c in convs for _ in range(k - 1)], dtype=torch.long)
    span_w = torch.tensor([c.line.span for c in convs], dtype=torch.long)
    slot_w = torch.tensor([c.line.slot for c in convs], dtype=torch.long)
    period = functools.reduce(math.lcm, span_w.tolist(), 1)
    fast["period"] = period
    if period <= _MAX_TABLE_PERIOD:
        s = torch.arange(period)[:, None]
        fast["gather_table"] = (slot_g + (s - back) % span_g).to(dev)
        fast["write_table"] = (slot_w + s % span_w).to(dev)
    else:
        fast["index_parts"] = tuple(v.to(dev) for v in (back, span_g, slot_g, span_w, slot_w))
    return fast


def plan_for(model) -> StreamPlan:
    """The cached plan of ``model``, re-prepared if its weights changed since."""
    plan = _PLANS.get(model)
    if plan is None or not plan.is_current():
        plan = prepare(model)
    return plan


# -- the state -------------------------------------------------------------------------------
class TCNState:
    """Streaming state of a :class:`~torchtcn.TCN`: every convolution's recent inputs.

    ``buf``: ring buffer (slots, C_max, N); ``t``: frames consumed so far (ring position);
    ``age``: (N,) frames since each stream (re)started, kept for non-causal models whose
    outputs at negative times are masked. Owned by the caller, never in ``state_dict``;
    :func:`step` updates it in place and returns it.

    Example (three streams; stream 1 restarts, then only streams 0 and 2 go on):
        >>> import torch, torchtcn
        >>> model = torchtcn.TCN(2, [8, 8], kernel_size=3).eval()
        >>> state = model.init_state(batch_size=3)
        >>> y, state = model.step(torch.randn(3, 2, 4), state)        # (N, C_in, t) chunk
        >>> state = state.reset([1])                                   # as if new
        >>> state = state.select([0, 2])                               # drop stream 1
        >>> y, state = model.step(torch.randn(2, 2, 1), state)
        >>> y.shape, state.batch_size
        (torch.Size([2, 8, 1]), 2)
    """

    def __init__(self, buf, t: int, age, signature, delay: int):
        self.buf = buf
        self.t = t
        self.age = age
        self.signature = signature
        self.delay = delay
        self._scratch = None

    @property
    def batch_size(self) -> int:
        return self.buf.shape[2]

    @property
    def device(self) -> torch.device:
        return self.buf.device

    @property
    def dtype(self) -> torch.dtype:
        return self.buf.dtype

    def reset(self, streams) -> TCNState:
        """Restart the given streams (index list or bool mask) as if new, in place; returns self."""
        idx = _stream_index(streams, self.batch_size, self.buf.device)
        self.buf[:, :, idx] = 0
        if self.age is not None:
            self.age[idx] = 0
        return self

    def select(self, indices) -> TCNState:
        """A new state holding the given streams (reordered, duplicated or dropped)."""
        idx = _stream_index(indices, self.batch_size, self.buf.device)
        age = None if self.age is None else self.age[idx].clone()
        return TCNState(self.buf[:, :, idx].clone(), self.t, age, self.signature, self.delay)

    def clone(self) -> TCNState:
        """An independent copy (``step`` mutates a state in place)."""
        age = None if self.age is None else self.age.clone()
        return TCNState(self.buf.clone(), self.t, age, self.signature, self.delay)

    def to(self, device) -> TCNState:
        age = None if self.age is None else self.age.to(device)
        return TCNState(self.buf.to(device), self.t, age, self.signature, self.delay)

    def __repr__(self) -> str:
        return (
            f"TCNState(batch_size={self.batch_size}, frames={self.t}, slots={self.buf.shape[0]}, "
            f"dtype={self.dtype}, device={self.device})"
        )


def init_state(model, batch_size: int) -> TCNState:
    """A fresh state for ``batch_size`` streams (dtype and device of the model's parameters).

    Prepares (folds) the model's weights, once per call.
    """
    batch_size = as_int("batch_size", batch_size)  # TypeError for 2.0 / True
    plan = prepare(model)
    buf = torch.zeros(plan.slots, plan.c_max, batch_size, dtype=plan.dtype, device=plan.device)
    age = torch.zeros(batch_size, dtype=torch.long, device=plan.device) if plan.needs_mask else None
    return TCNState(buf, 0, age, plan.signature, plan.delay)


def _check_state(plan: StreamPlan, state) -> None:
    if not isinstance(state, TCNState):
        raise TypeError(f"expected a TCNState from model.init_state, got {type(state).__name__}")
    if state.signature is not plan.signature and state.signature != plan.signature:
        raise ValueError(
            f"state was made by a different architecture: expected {plan.signature}, "
            f"found {state.signature}"
        )
    if state.buf.dtype != plan.dtype or state.buf.device != plan.device:
        raise ValueError(
            f"state must match the model's dtype and device: expected {plan.dtype} on "
            f"{plan.device}, found {state.buf.dtype} on {state.buf.device}"
        )
    if state.buf.is_inference() and not torch.is_inference_mode_enabled():
        raise ValueError(
            "state was made under torch.inference_mode() and can only be stepped inside it "
            "(step updates it in place): make it with init_state outside, or step inside"
        )


def _check(plan: StreamPlan, x, state) -> int:
    """Validate a chunk and a state against the plan; return the chunk length t."""
    _check_state(plan, state)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"chunk must be a torch.Tensor, got {type(x).__name__}")
    shape = "(N, C, t)" if plan.layout == "NCL" else "(N, t, C)"
    if x.dim() != 3:
        raise ValueError(f"chunk must be 3-D {shape}, got shape {tuple(x.shape)}")
    c_dim, t_dim = (1, 2) if plan.layout == "NCL" else (2, 1)
    if x.shape[c_dim] != plan.in_channels:
        raise ValueError(
            f"chunk must have {plan.in_channels} channels on dim {c_dim} of {shape}, "
            f"found shape {tuple(x.shape)}"
        )
    if x.shape[0] != state.batch_size:
        raise ValueError(
            f"chunk batch size must equal the state's: expected {state.batch_size}, "
            f"found {x.shape[0]}"
        )
    if not (x.is_floating_point() or x.is_complex()):
        raise TypeError(f"chunk must be a floating tensor of the model's dtype {plan.dtype}, "
                        f"found {x.dtype}")
    if x.dtype != plan.dtype:
        raise ValueError(f"chunk dtype must be the model's: expected {plan.dtype}, found {x.dtype}")
    if x.device != plan.device:
        raise ValueError(
            f"chunk must be on the model's device: expected {plan.device}, found {x.device}"
        )
    t = x.shape[t_dim]
    if t < 1:
        raise ValueError(f"chunk must have at least one frame, found shape {tuple(x.shape)}")
    return t


def _film_terms(plan: StreamPlan, cond: torch.Tensor | None):
    """Each unit's FiLM ``(gamma, beta)``, both (C_out, N), from ``cond`` (N, C_cond); None
    for an unconditioned model. One matmul for the whole network."""
    if plan.film is None:
        return None
    w, b = plan.film
    terms = torch.addmm(b[:, None], w, cond.detach().T)  # (sum 2 C_out, N)
    return [part.chunk(2, 0) for part in terms.split(plan.film_rows)]


def _apply_film(z: torch.Tensor, film) -> torch.Tensor:
    # the module's ``h * (1 + gamma) + beta``, computed the same way (FiLM.forward)
    gamma, beta = film
    return z + beta + z * gamma


def step(model, x: torch.Tensor, state: TCNState, cond: torch.Tensor | None = None):
    """Consume a chunk and return its outputs and the (updated in place) state.

    Args:
        model: a :class:`~torchtcn.TCN`.
        x: (N, C_in, t) chunk (or (N, t, C_in) with ``layout="NLC"``), any ``t >= 1``.
        state: from ``model.init_state(N)``.
        cond: (N, cond_channels), each stream's conditioning vector, for a model built with
            ``cond_channels > 0`` (the same vector on every call of a stream, as in the full
            forward pass); None otherwise.

    Returns:
        ``(y, state)``, ``y`` of shape (N, C_out, t) (or NLC). For a causal model ``y`` is the
        full forward pass's output at these t frames. For a non-causal one, output frame i of
        the chunk is the forward pass's frame ``i - stream_delay`` (counting from the stream's
        start), and zeros while that is negative; :func:`flush` returns the last frames.
    """
    check_streamable(model)
    plan = _PLANS.get(model)
    if plan is None or not plan.is_current():
        plan = prepare(model)
    t = _check(plan, x, state)
    films = None
    if cond is not None or plan.cond_channels:
        check_cond(cond, plan.cond_channels, state.batch_size, x, "the TCN")
        films = _film_terms(plan, cond)
    if x.requires_grad:
        x = x.detach()  # streaming is inference only; the folded weights carry no graph
    if t == 1 and plan.fast is not None:
        return _step_fast(plan, x, state, films), state
    return _step_chunk(plan, x, state, films=films), state


def flush(model, state: TCNState, cond: torch.Tensor | None = None):
    """End every stream of ``state``: return the last ``stream_delay`` output frames
    (``cond``: as given to :func:`step`; a non-causal conditioned model needs it here too).

    For a non-causal model the outputs of the last ``stream_delay`` input frames need future
    inputs that never come; the full forward pass pads them with zeros, and so does this
    (every layer's input after the stream's end is masked to zero). Returns ``(y, state)``
    with ``y`` (N, C_out, stream_delay) (or NLC), empty for causal models; afterwards every
    stream is reset. To end only some streams, flush ``state.select(them)`` and then
    ``state.reset(them)``.
    """
    check_streamable(model)
    plan = plan_for(model)
    _check_state(plan, state)
    n = state.batch_size
    shape = (n, plan.in_channels, plan.delay)
    if plan.layout == "NLC":
        shape = (n, plan.delay, plan.in_channels)
    zeros = torch.zeros(shape, dtype=plan.dtype, device=plan.device)
    if cond is not None or plan.delay:
        check_cond(cond, plan.cond_channels, n, zeros, "the TCN")
    if plan.delay == 0:  # causal: every output was already returned by step
        out = (n, plan.out_channels, 0) if plan.layout == "NCL" else (n, 0, plan.out_channels)
        y = zeros.new_zeros(out)
    else:
        y = _step_chunk(plan, zeros, state, end=state.age.clone(), films=_film_terms(plan, cond))
    state.reset(torch.ones(n, dtype=torch.bool, device=state.buf.device))
    return y, state


# -- general chunk path --------------------------------------------------------------------
def _ring_window(buf, line: _Line, s0: int, h: torch.Tensor) -> torch.Tensor:
    """Window = the line's last ``span`` frames + the chunk ``h`` (t, C, N); stores the newest
    ``span`` frames of the window back into the ring."""
    p, c = line.span, h.shape[1]
    if p == 0:
        return h
    dev = buf.device
    past = buf.index_select(0, line.slot + torch.arange(s0 - p, s0, device=dev) % p)[:, :c]
    win = torch.cat([past, h], 0)
    t = h.shape[0]
    new = line.slot + torch.arange(s0 + t - p, s0 + t, device=dev) % p
    buf[:, :c].index_copy_(0, new, win[-p:])
    return win


def _channel_ops(conv: _Conv, z: torch.Tensor, film=None) -> torch.Tensor:
    """Layer norm, FiLM and activation (or gate) of a conv output, channel dim -2; ``film``
    is the unit's ``(gamma, beta)``, broadcastable to ``z``."""
    if conv.layer_norm is not None:
        w, b, eps, shape = conv.layer_norm
        z = F.layer_norm(z.transpose(-1, -2), shape, w, b, eps).transpose(-1, -2)
    if film is not None:
        z = _apply_film(z, film)
    if conv.gate == "glu":
        return F.glu(z, dim=-2)
    if conv.gate == "wavenet":
        a, g = z.chunk(2, dim=-2)
        return torch.tanh(a) * torch.sigmoid(g)
    return z if conv.act is None else conv.act(z)


def _conv_chunk(conv: _Conv, win: torch.Tensor) -> torch.Tensor:
    """Valid dilated conv over a (P + t, C, N) window -> (t, C_out, N)."""
    y = F.conv1d(win.permute(2, 1, 0), conv.weight, conv.bias, dilation=conv.dilation)
    return y.permute(2, 1, 0)


def _pointwise(wb, h: torch.Tensor) -> torch.Tensor:
    """1x1 conv on (..., C_in, N): (weight (C_out, C_in), bias)."""
    w, b = wb
    return torch.matmul(w, h) + b[:, None]


def _masks(plan: StreamPlan, state: TCNState, t: int, end):
    """(t, 1, N) validity masks per input delay: 0 <= frame time < end."""
    frames = state.age[None, :] + torch.arange(t, device=state.buf.device)[:, None]  # (t, N)
    out = {}
    for d in {0, plan.delay, *plan.mask_delays}:
        tau = frames - d
        valid = tau >= 0
        if end is not None:
            valid = valid & (tau < end[None, :])
        out[d] = valid[:, None, :].to(plan.dtype)
    return out


def _step_chunk(
    plan: StreamPlan, x: torch.Tensor, state: TCNState, end=None, films=None
) -> torch.Tensor:
    h = x.permute(2, 1, 0) if plan.layout == "NCL" else x.permute(1, 2, 0)  # (t, C, N)
    t = h.shape[0]
    s0, buf = state.t, state.buf
    masks = _masks(plan, state, t, end) if plan.needs_mask else None

    def conv_unit(conv: _Conv, inp, j: int):
        if masks is not None and (conv.line.in_delay or end is not None):
            inp = inp * masks[conv.line.in_delay]
        z = _conv_chunk(conv, _ring_window(buf, conv.line, s0, inp))
        return _channel_ops(conv, z, None if films is None else films[j])

    skip_sum = None
    for i, b in enumerate(plan.blocks):
        u = conv_unit(b.conv2, conv_unit(b.conv1, h, 2 * i), 2 * i + 1)
        res = h if b.down is None else _pointwise(b.down, h)
        if b.res_delay is not None:
            res = _ring_window(buf, b.res_delay, s0, res)[:t]
        h = u + res
        if b.out_act is not None:
            h = b.out_act(h)
        if plan.has_skips:
            s = h if b.skip is None else _pointwise(b.skip, h)
            if b.skip_delay is not None:
                s = _ring_window(buf, b.skip_delay, s0, s)[:t]
            skip_sum = s if skip_sum is None else skip_sum + s
    if skip_sum is not None:
        h = skip_sum if plan.skip_act is None else plan.skip_act(skip_sum)
    if masks is not None:
        h = h * masks[plan.delay]
        state.age += t
    state.t = s0 + t
    return h.permute(2, 1, 0) if plan.layout == "NCL" else h.permute(2, 0, 1)


# -- single-frame fast path (causal) ---------------------------------------------------------
def _scratch(plan: StreamPlan, state: TCNState) -> dict:
    """Preallocated per-state work tensors and their views (rebuilt only if the plan changed)."""
    s = state._scratch
    # work tensors made under torch.inference_mode() cannot be written outside it
    if s is not None and s["plan"] is plan and (
        torch.is_inference_mode_enabled() or not s["cols"].is_inference()
    ):
        return s
    f, n = plan.fast, state.batch_size
    J, k, c_max = f["J"], f["k"], plan.c_max
    cols = torch.zeros(J, k, c_max, n, dtype=plan.dtype, device=plan.device)
    convs = f["convs"]
    s = {
        "plan": plan,
        "cols": cols,
        "past": torch.empty(J * (k - 1), c_max, n, dtype=plan.dtype, device=plan.device),
        "cur": cols[:, k - 1],  # (J, C_max, N): every conv's current input
        "cur_in": [cols[j, k - 1, : c.weight.shape[1]] for j, c in enumerate(convs)],
        "block": [cols[j].view(k * c_max, n) for j in range(J)],
    }
    state._scratch = s
    return s


def _finish_unit(conv: _Conv, z: torch.Tensor, out: torch.Tensor | None, film=None) -> torch.Tensor:
    """Norm, FiLM and activation of a (C_out, N) conv output, written into ``out`` when given."""
    if film is not None:
        if conv.layer_norm is not None:  # FiLM goes between the layer norm and the activation
            y = _channel_ops(conv, z, film)
            return out.copy_(y) if out is not None else y
        z = _apply_film(z, film)
    if conv.layer_norm is None and conv.gate is None:
        if conv.act is torch.relu:
            return torch.clamp_min(z, 0.0, out=out) if out is not None else z.relu_()
        if conv.act is None:
            return out.copy_(z) if out is not None else z
    y = _channel_ops(conv, z)
    return out.copy_(y) if out is not None else y


_NO_FILMS = (None, None)


def _step_fast(plan: StreamPlan, x: torch.Tensor, state: TCNState, films=None) -> torch.Tensor:
    f = plan.fast
    s = _scratch(plan, state)
    buf, pos = state.buf, state.t
    k = f["k"]
    if k > 1:
        r = pos % f["period"]
        if "gather_table" in f:
            g_idx, w_idx = f["gather_table"][r], f["write_table"][r]
        else:
            back, span_g, slot_g, span_w, slot_w = f["index_parts"]
            g_idx = slot_g + (pos - back) % span_g
            w_idx = slot_w + pos % span_w
        past = torch.index_select(buf, 0, g_idx, out=s["past"])
        s["cols"][:, : k - 1].copy_(past.view(f["J"], k - 1, plan.c_max, -1))
    cur_in, block, w_full, bias = s["cur_in"], s["block"], f["w_full"], f["bias"]
    h = cur_in[0].copy_(x[:, :, 0].T if plan.layout == "NCL" else x[:, 0, :].T)
    blocks = plan.blocks
    last = len(blocks) - 1
    skip_sum = None
    for i, b in enumerate(blocks):
        j = 2 * i
        f1, f2 = _NO_FILMS if films is None else films[j : j + 2]
        u = _finish_unit(b.conv1, torch.addmm(bias[j], w_full[j], block[j]), cur_in[j + 1], f1)
        u = _finish_unit(b.conv2, torch.addmm(bias[j + 1], w_full[j + 1], block[j + 1]), None, f2)
        if b.down is not None:
            u = torch.addmm(u, b.down[0], h).add_(b.down[1][:, None])
        else:
            u = u.add_(h)
        # The block output is the next block's conv input: write it straight into place.
        if i < last:
            h = cur_in[j + 2]
            if b.out_act is torch.relu:
                torch.clamp_min(u, 0.0, out=h)
            else:
                h.copy_(u if b.out_act is None else b.out_act(u))
        else:
            h = u if b.out_act is None else (u.relu_() if b.out_act is torch.relu else b.out_act(u))
        if plan.has_skips:
            sk = h if b.skip is None else _pointwise(b.skip, h)
            skip_sum = sk.clone() if skip_sum is None else skip_sum.add_(sk)
    if skip_sum is not None:
        h = skip_sum if plan.skip_act is None else plan.skip_act(skip_sum)
    if k > 1:
        buf.index_copy_(0, w_idx, s["cur"])
    state.t = pos + 1
    return h.T.unsqueeze(2) if plan.layout == "NCL" else h.T.unsqueeze(1)
