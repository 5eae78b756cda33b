"""The fused training path of a residual block: one autograd node per block.

``conv -> relu -> dropout -> conv -> relu -> dropout -> (+ residual) -> relu`` computed by
:class:`FusedBlockFunction`, which keeps for the backward pass only what it needs:

* the block input and the (unscaled) output of the first unit, as float tensors, and
* one bool "keep" mask per activation (``relu(z) > 0`` and the dropout mask folded together,
  one byte an element, where autograd's own graph keeps a float conv output, a float relu
  output, a float dropout mask and a float dropout output per unit).

The dropout scale ``1 / (1 - p)`` is folded into the next convolution's weights and into the
parameter gradients, so it never costs a pass over an activation. With ``recompute=True`` the
block keeps only its input and the random-number state, and recomputes the rest in backward
(the ``low_memory`` mode of :class:`~torchtcn.TCN`); the masks are regenerated from the saved
state, so its gradients equal the default mode's exactly.

Dropout masks come from :func:`keep_mask`: on the CPU, for small ``p``, it draws the gaps
between dropped elements (geometric) instead of one Bernoulli per element, about 1/p times
fewer random numbers; the distribution is the same i.i.d. Bernoulli(1 - p) keep mask.

The module path (``ResidualBlock`` run module by module) remains the reference and the path
for everything the fused block does not cover (batch / layer norm, gates, other activations,
hooks, ``torch.compile``); :func:`disabled` forces it, e.g. to compare the two.
"""

from __future__ import annotations

import contextlib
import math
import threading
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["BlockSpec", "FusedBlockFunction", "keep_mask", "dropout", "disabled", "is_enabled"]

# Below this drop probability the CPU mask sampler draws geometric gaps (n * p random numbers)
# rather than n uniforms; above it the gaps save little and the scatter costs more.
_GAP_SAMPLER_MAX_P = 0.25
# gaps drawn per round beyond the mean, in standard deviations (a second round is then rare)
_GAP_SLACK_SIGMAS = 8.0

_state = threading.local()


def is_enabled() -> bool:
    """Whether blocks may take the fused path (on by default; see :func:`disabled`)."""
    return getattr(_state, "enabled", True)


@contextlib.contextmanager
def disabled():
    """Run every residual block module by module (the reference path) inside this context.

    Example:
        >>> import torchtcn
        >>> model = torchtcn.TCN(1, [4, 4], kernel_size=3)
        >>> with torchtcn.fused.disabled():
        ...     y = model(torch.randn(2, 1, 9))
    """
    previous = is_enabled()
    _state.enabled = False
    try:
        yield
    finally:
        _state.enabled = previous


def tracing() -> bool:
    """True under ``torch.compile`` / ``torch.export`` / TorchScript tracing, where the plain
    module path (which those tools understand and fuse themselves) must be used."""
    compiling = getattr(torch.compiler, "is_compiling", None)
    return bool((compiling is not None and compiling()) or torch.jit.is_tracing())


def autocast_enabled(device_type: str) -> bool:
    """Whether autocast is on for ``device_type`` (``"cpu"``, ``"cuda"``)."""
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4 takes no device type
        return torch.is_autocast_enabled() if device_type == "cuda" else False


# -- dropout masks ----------------------------------------------------------------------------
def _gap_drop_positions(n: int, p: float, device) -> torch.Tensor:
    """Flat indices in [0, n) of the dropped elements of an i.i.d. Bernoulli(p) sequence.

    The number of kept elements before each dropped one is geometric:
    ``P(gap >= k) = (1 - p)**k = P(1 - u <= (1 - p)**k)`` for ``u`` uniform in [0, 1), so
    ``gap = floor(log1p(-u) / log1p(-p))`` (float64 keeps the quantisation below 2**-52).
    """
    log_keep = math.log1p(-p)
    chunks, start = [], 0
    while start < n:
        rest = n - start
        mean = rest * p
        # enough gaps to cover the rest with overwhelming probability; loop otherwise
        m = max(1, int(mean + _GAP_SLACK_SIGMAS * math.sqrt(mean + 1.0) + 16))
        u = torch.rand(m, dtype=torch.float64, device=device)
        # gaps past n all mean "no more drops"; clamped so that a tiny p cannot overflow int64
        steps = u.neg_().log1p_().div_(log_keep).floor_().clamp_(max=n).to(torch.int64).add_(1)
        pos = steps.cumsum_(0).add_(start - 1)  # increasing, so the ones < n are a prefix
        inside = int((pos < n).sum())
        chunks.append(pos[:inside])
        start = n if inside < m else int(pos[-1]) + 1
    return torch.cat(chunks) if len(chunks) > 1 else chunks[0]


def drop_(t: torch.Tensor, p: float, per_channel: bool = False) -> torch.Tensor:
    """Zero (or set False) the dropped elements of a contiguous (N, C, T) tensor in place:
    each element (or each (sample, channel) row, ``per_channel``) i.i.d. with probability p.
    Draws exactly what :func:`keep_mask` draws for the same shape. Returns ``t``."""
    if p == 0.0:
        return t
    n, c, length = t.shape
    if t.device.type == "cpu" and p <= _GAP_SAMPLER_MAX_P:
        # scatter zeros at the few dropped positions; no dense mask is built
        rows = t.view(n * c, length) if per_channel else t.view(-1)
        rows[_gap_drop_positions(rows.shape[0], p, t.device)] = 0
        return t
    keep = keep_mask(_mask_shape(t, per_channel), p, t.device)
    return t.logical_and_(keep) if t.dtype == torch.bool else t.mul_(_as_factor(keep))


def keep_mask(shape, p: float, device) -> torch.Tensor:
    """A bool mask of ``shape`` whose elements are True (kept) i.i.d. with probability 1 - p.

    Consumes the default generator of ``device`` (so ``torch.manual_seed`` makes it
    reproducible and saving / restoring the RNG state regenerates it).

    Example:
        >>> keep_mask((2, 3, 5), 0.1, "cpu").shape
        torch.Size([2, 3, 5])
    """
    device = torch.device(device)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    if p == 0.0:
        return torch.ones(shape, dtype=torch.bool, device=device)
    if device.type == "cpu" and p <= _GAP_SAMPLER_MAX_P:
        n = math.prod(shape)
        keep = torch.ones(n, dtype=torch.bool, device=device)
        keep[_gap_drop_positions(n, p, device)] = False
        return keep.view(shape)
    return torch.rand(shape, device=device) >= p


def _mask_shape(x: torch.Tensor, per_channel: bool) -> tuple[int, ...]:
    # channel ("spatial") dropout: one draw per (sample, channel), shared by every time step
    return (x.shape[0], x.shape[1], 1) if per_channel else tuple(x.shape)


def _as_factor(mask: torch.Tensor) -> torch.Tensor:
    # multiplying by a uint8 view of a bool mask is a single vectorised pass; a bool operand
    # (or torch.where) takes a slower type-promotion path on the CPU
    return mask.view(torch.uint8)


class _DropoutFunction(torch.autograd.Function):
    """``x * keep / (1 - p)`` that saves the bool mask (1 byte an element) for backward."""

    @staticmethod
    def forward(ctx, x, p: float, per_channel: bool):
        keep = keep_mask(_mask_shape(x, per_channel), p, x.device)
        ctx.save_for_backward(keep)
        ctx.scale = 1.0 / (1.0 - p)
        return torch.mul(x, _as_factor(keep)).mul_(ctx.scale)

    @staticmethod
    def backward(ctx, grad):
        # linear in grad and written in autograd ops: differentiable again (create_graph=True)
        (keep,) = ctx.saved_tensors
        return torch.mul(grad, _as_factor(keep)).mul_(ctx.scale), None, None


def dropout(x: torch.Tensor, p: float, per_channel: bool = False) -> torch.Tensor:
    """Training-mode dropout of an (N, C, T) tensor: element-wise, or whole channels
    (``per_channel``, like ``nn.Dropout1d``). Same distribution as ``F.dropout`` /
    ``F.dropout1d``; cheaper masks on the CPU (see :func:`keep_mask`)."""
    return _DropoutFunction.apply(x, p, per_channel)


# -- the fused residual block -----------------------------------------------------------------
@dataclass(frozen=True)
class BlockSpec:
    """What a fused block computes besides its tensors."""

    dilation: int
    padding: tuple[int, int]  # (left, right) zeros of both convolutions
    p1: float  # dropout probability after unit 1 (0 when inactive)
    p2: float
    channel1: bool  # unit 1's dropout drops whole channels
    channel2: bool
    residual_relu: bool  # relu after the residual sum
    recompute: bool  # keep only the input and the RNG state; recompute in backward


def _pad(x: torch.Tensor, padding: tuple[int, int]) -> torch.Tensor:
    return F.pad(x, padding) if padding != (0, 0) else x


def _relu_padded(z: torch.Tensor, padding: tuple[int, int]) -> torch.Tensor:
    """``pad(relu(z))`` written straight into the padded buffer (one pass, no extra copy)."""
    left, right = padding
    if left == right == 0:
        return z.clamp_min_(0)
    n, c, t = z.shape
    out = z.new_empty(n, c, left + t + right)
    out[:, :, :left].zero_()
    out[:, :, left + t :].zero_()
    torch.clamp_min(z, 0, out=out[:, :, left : left + t])
    return out


def _conv_weight_grad(grad_out, padded_input, weight, dilation):
    return torch.ops.aten.convolution_backward(
        grad_out, padded_input, weight, None, [1], [0], [dilation], False, [0], 1,
        [False, True, False],
    )[1]


def _conv_input_grad(grad_out, weight, dilation, padding):
    """Gradient of ``conv1d(pad(x, padding), weight, dilation)`` with respect to ``x``.

    On the CPU it is run as a forward convolution of the gradient (padded the other way) with
    the flipped, transposed kernel: oneDNN's forward kernels are markedly faster than its
    backward-data kernels at large dilations. Elsewhere (cuDNN) the backward kernel is used.
    """
    left, right = padding
    if grad_out.device.type != "cpu":
        n, _, t = grad_out.shape
        shape = (n, weight.shape[1], left + t + right)
        grad = torch.nn.grad.conv1d_input(shape, weight, grad_out, dilation=dilation)
        return grad[:, :, left : left + t]
    flipped = weight.flip(-1).transpose(0, 1)
    return F.conv1d(_pad(grad_out, (right, left)), flipped, dilation=dilation)


def _scaled(t, factor: float):
    return t if t is None or factor == 1.0 else t.mul_(factor)


def _block_forward(x, w1, b1, w2, b2, wd, bd, spec: BlockSpec, geometry=None, masks=None):
    """The block's output and what backward needs: ``(out, h1_padded, k2)``.

    ``h1_padded`` is unit 1's output before its dropout scale ``s1`` (zero where relu or
    dropout zeroed it, so it is its own relu / dropout mask in backward); ``s1`` is folded into
    unit 2's weights (``conv(s1 * h, w) == conv(h, s1 * w)``). ``k2`` is unit 2's keep mask
    (relu and dropout), a bool tensor, because unit 2's output is never kept.

    ``geometry``: (dilation, padding) to use instead of the spec's (the residue-class
    subsequences of :class:`_Residues` run with dilation 1). ``masks``: (keep1, keep2) dropout
    masks to apply instead of drawing them.
    """
    d, pad = geometry if geometry is not None else (spec.dilation, spec.padding)
    s1 = 1.0 / (1.0 - spec.p1)
    s2 = 1.0 / (1.0 - spec.p2)
    z1 = F.conv1d(_pad(x, pad), w1, b1, dilation=d)
    _apply_dropout(z1, spec.p1, spec.channel1, None if masks is None else masks[0])
    h1p = _relu_padded(z1, pad)
    del z1
    z2 = F.conv1d(h1p, w2 * s1 if s1 != 1.0 else w2, b2, dilation=d)
    _apply_dropout(z2, spec.p2, spec.channel2, None if masks is None else masks[1])
    k2 = z2 > 0
    res = x if wd is None else F.conv1d(x, wd, bd)
    out = torch.add(res, z2.clamp_min_(0), alpha=s2, out=z2)  # in place: one buffer fewer
    if spec.residual_relu:
        out = out.relu_()
    return out, h1p, k2


def _apply_dropout(z, p, per_channel, keep):
    if keep is not None:
        z.mul_(_as_factor(keep))
    elif p > 0.0:
        drop_(z, p, per_channel)


def _block_backward(grad, x, h1p, k2, out, w1, b1, w2, b2, wd, bd, spec, geometry, need):
    """Gradients (x, w1, b1, w2, b2, wd, bd) of the block from what forward kept."""
    d, pad = geometry
    left, t = pad[0], grad.shape[-1]
    s1 = 1.0 / (1.0 - spec.p1)
    s2 = 1.0 / (1.0 - spec.p2)
    c = s1 * s2
    # dL/d(residual sum)
    q = torch.ops.aten.threshold_backward(grad, out, 0) if out is not None else grad
    del out
    # unit 2: z2 = conv(h1p, s1 * w2) + b2 and out = res + s2 * k2 * z2. q2 = dL/dz2 / s2
    q2 = torch.mul(q, _as_factor(k2))
    del k2
    gw2 = _scaled(_conv_weight_grad(q2, h1p, w2, d), c) if need[3] else None
    gb2 = _scaled(q2.sum((0, 2)), s2) if b2 is not None and need[4] else None
    # unit 1: dL/dz1 = s1 * s2 * [h1 > 0] * conv_input_grad(q2, w2); q1 = dL/dz1 / (s1 s2)
    h1 = h1p[:, :, left : left + t]
    gh1 = _conv_input_grad(q2, w2, d, pad)
    q1 = torch.ops.aten.threshold_backward.grad_input(gh1, h1, 0, grad_input=gh1)
    del q2, h1, h1p
    gw1 = _scaled(_conv_weight_grad(q1, _pad(x, pad), w1, d), c) if need[1] else None
    gb1 = _scaled(q1.sum((0, 2)), c) if b1 is not None and need[2] else None
    gx = gwd = gbd = None
    if wd is not None and (need[0] or need[5] or need[6]):
        gres, gwd, gbd = torch.ops.aten.convolution_backward(
            q, x, wd, [wd.shape[0]] if bd is not None else None, [1], [0], [1], False, [0],
            1, [need[0], need[5], bd is not None and need[6]],
        )
    else:
        gres = q
    if need[0]:
        gx1 = _conv_input_grad(q1, w1, d, pad)
        gx = torch.add(gres, gx1, alpha=c, out=gx1 if gx1.is_contiguous() else None)
    return gx, gw1, gb1, gw2, gb2, gwd, gbd


# -- gradients on a few residue classes -------------------------------------------------------
# With a loss on the last step only (sequence classification, the adding problem) the gradient
# reaching a block with dilation d is nonzero only at steps of one residue class mod d: the
# block's dilated convolutions never mix residue classes (when the padding is a multiple of d),
# so its backward runs exactly on those classes' subsequences, dilation 1, 1/d of the work.
_RESIDUE_MAX_FRACTION = 0.5  # of the time steps; above it the dense backward is as fast


def _gradient_residues(grad: torch.Tensor, spec: BlockSpec):
    """The residues (mod the dilation) of the steps where ``grad`` is nonzero, as a LongTensor,
    when the backward on those classes does at most ``_RESIDUE_MAX_FRACTION`` of the work;
    otherwise None."""
    d, (left, right) = spec.dilation, spec.padding
    t = grad.shape[-1]
    if d == 1 or left % d or right % d:
        return None
    if right and t % d:
        # classes shorter than ceil(T / d) end in a clamped step that stands where the
        # forward read zero padding; with padding on the right valid steps read it
        return None
    length = -(-t // d)
    most = int(_RESIDUE_MAX_FRACTION * t) // length
    if most < 1:
        return None
    # quick rejection (dense gradients, e.g. a loss at every step) from the last d steps
    tail = grad[:, :, -d:].ne(0).any(0).any(0)
    if int(tail.sum()) > most:
        return None
    steps = grad.ne(0).any(0).any(0).nonzero().squeeze(1)
    residues = torch.unique(steps.remainder_(d))
    return residues if residues.numel() <= most else None


class _Residues:
    """Gather (N, C, T) tensors to the subsequences of some residue classes mod d, stacked on
    the batch axis: (N * R, C, L), L = ceil(T / d); and scatter back. Steps past T (classes
    shorter than L) are clamped on gather and must carry zero gradient; they come last in
    time, so causal convolutions never let them reach a valid step (a non-causal block takes
    this path only when T is a multiple of d: no such steps)."""

    def __init__(self, residues: torch.Tensor, d: int, t: int):
        self.r, self.length, self.t = residues.numel(), -(-t // d), t
        pos = residues.view(-1, 1) + d * torch.arange(self.length, device=residues.device)
        self.valid = (pos < t).view(1, self.r, 1, self.length)
        self.all_valid = bool(self.valid.all())
        self.index = pos.clamp_(max=t - 1).flatten()

    def gather(self, a: torch.Tensor, zero_invalid: bool = False) -> torch.Tensor:
        n, c, _ = a.shape
        g = a.index_select(2, self.index).view(n, c, self.r, self.length).transpose(1, 2)
        if zero_invalid and not self.all_valid:
            g = g * self.valid
        return g.reshape(n * self.r, c, self.length)

    def repeat(self, a: torch.Tensor) -> torch.Tensor:
        """A per-(sample, channel) tensor (N, C, 1) for the stacked subsequences."""
        n, c, one = a.shape
        return a.unsqueeze(1).expand(n, self.r, c, one).reshape(n * self.r, c, one)

    def scatter(self, a: torch.Tensor) -> torch.Tensor:
        nr, c, _ = a.shape
        n = nr // self.r
        src = a.view(n, self.r, c, self.length).transpose(1, 2).reshape(n, c, -1)
        out = a.new_zeros(n, c, self.t)
        if self.all_valid:
            return out.index_copy_(2, self.index, src)
        keep = self.valid.flatten()
        return out.index_copy_(2, self.index[keep], src[:, :, keep])


def _residue_backward(grad, residues, x, saved, weights, spec, need, rng):
    """:func:`_block_backward` on the residue classes that carry gradient."""
    w1, b1, w2, b2, wd, bd = weights
    d, (left, right) = spec.dilation, spec.padding
    t = grad.shape[-1]
    sub = _Residues(residues, d, t)
    geometry = (1, (left // d, right // d))
    x_r = sub.gather(x)
    if saved is None:  # low_memory: recompute the block on the subsequences only
        with _restored_rng(x.device, rng) if rng is not None else _nothing():
            masks = [_residue_mask(x, spec.p1, spec.channel1, w1.shape[0], sub),
                     _residue_mask(x, spec.p2, spec.channel2, w2.shape[0], sub)]
        out_r, h1p_r, k2_r = _block_forward(x_r, *weights, spec, geometry, masks)
    else:
        h1p, k2, out = saved
        h1p_r = _pad(sub.gather(h1p[:, :, left : left + t]), geometry[1])
        k2_r = sub.gather(k2)
        out_r = sub.gather(out) if out is not None else None
    if not spec.residual_relu:
        out_r = None
    grads = _block_backward(sub.gather(grad, zero_invalid=True), x_r, h1p_r, k2_r, out_r,
                            *weights, spec, geometry, need)
    gx = None if grads[0] is None else sub.scatter(grads[0])
    return (gx, *grads[1:])


def _residue_mask(x, p, per_channel, channels, sub: _Residues):
    # the mask drop_ drew in forward for an (N, channels, T) activation, on the subsequences
    if p == 0.0:
        return None
    n, _, t = x.shape
    shape = (n, channels, 1) if per_channel else (n, channels, t)
    keep = keep_mask(shape, p, x.device)
    return sub.repeat(keep) if per_channel else sub.gather(keep)


def _rng_state(device: torch.device):
    if device.type == "cuda":
        return torch.cuda.get_rng_state(device)
    return torch.get_rng_state()


@contextlib.contextmanager
def _restored_rng(device: torch.device, state):
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type=device.type):
        if device.type == "cuda":
            torch.cuda.set_rng_state(state, device)
        else:
            torch.set_rng_state(state)
        yield


class FusedBlockFunction(torch.autograd.Function):
    """One residual block (two relu conv units with dropout, residual, relu) as one node.

    ``apply(x, w1, b1, w2, b2, wd, bd, spec)``: ``x`` (N, C_in, T); ``w1`` (C, C_in, k);
    ``w2`` (C, C, k); ``wd``/``bd`` the 1x1 residual convolution or None; biases may be None.
    Returns (N, C, T). Twice differentiable: a backward with ``create_graph=True`` (gradient
    penalties, Hessian-vector products) differentiates :func:`_block_with_masks` instead of
    running the hand-written gradients.

    Kept for backward: the input ``x`` (which the previous block keeps anyway as its output),
    unit 1's padded output, unit 2's bool mask and the block output (which the next block
    keeps anyway as its input): about one float and one byte per element beyond what is
    shared, against four to six floats for the module path. With ``spec.recompute``: only
    ``x`` and the RNG state.
    """

    @staticmethod
    def forward(ctx, x, w1, b1, w2, b2, wd, bd, spec: BlockSpec):
        dropout = spec.p1 > 0.0 or spec.p2 > 0.0
        ctx.rng = _rng_state(x.device) if spec.recompute and dropout else None
        out, h1p, k2 = _block_forward(x, w1, b1, w2, b2, wd, bd, spec)
        ctx.spec = spec
        if spec.recompute:
            ctx.save_for_backward(x, w1, b1, w2, b2, wd, bd)
        else:
            kept_out = out if spec.residual_relu else None
            ctx.save_for_backward(x, w1, b1, w2, b2, wd, bd, h1p, k2, kept_out)
        return out

    @staticmethod
    def backward(ctx, grad):
        if torch.is_grad_enabled():  # create_graph=True: the gradients must have a graph
            return (*_differentiable_backward(ctx, grad), None)
        spec = ctx.spec
        x, w1, b1, w2, b2, wd, bd, *rest = ctx.saved_tensors
        weights = (w1, b1, w2, b2, wd, bd)
        need = ctx.needs_input_grad
        grad = grad.contiguous()
        residues = _gradient_residues(grad, spec)
        if residues is not None and residues.numel() == 0:  # no gradient reaches the block
            return tuple(None if t is None or not n else torch.zeros_like(t)
                         for t, n in zip((x, *weights), need)) + (None,)
        if residues is not None:
            saved = None if spec.recompute else rest
            return (*_residue_backward(grad, residues, x, saved, weights, spec, need, ctx.rng),
                    None)
        if spec.recompute:
            with _restored_rng(x.device, ctx.rng) if ctx.rng is not None else _nothing():
                out, h1p, k2 = _block_forward(x, *weights, spec)
            if not spec.residual_relu:
                out = None
        else:
            h1p, k2, out = rest
        geometry = (spec.dilation, spec.padding)
        grads = _block_backward(grad, x, h1p, k2, out, *weights, spec, geometry, need)
        return (*grads, None)


@contextlib.contextmanager
def _nothing():
    yield


def _differentiable_backward(ctx, grad):
    """The block's input gradients as autograd ops of ``grad`` and the inputs (double backward)."""
    spec = ctx.spec
    x, w1, b1, w2, b2, wd, bd, *rest = ctx.saved_tensors
    inputs = (x, w1, b1, w2, b2, wd, bd)
    if spec.recompute:
        with torch.no_grad(), _restored_rng(x.device, ctx.rng) if ctx.rng is not None else _nothing():
            out, h1p, k2 = _block_forward(x, w1, b1, w2, b2, wd, bd, spec)
    else:
        h1p, k2, out = rest
    wanted = [i for i, (t, n) in enumerate(zip(inputs, ctx.needs_input_grad)) if n and t is not None]
    y = _block_with_masks(*inputs, spec, h1p, k2, out if spec.residual_relu else None)
    grads = torch.autograd.grad(y, [inputs[i] for i in wanted], grad, create_graph=True,
                                allow_unused=True)
    found = dict(zip(wanted, grads))
    return tuple(found.get(i) for i in range(len(inputs)))


def _block_with_masks(x, w1, b1, w2, b2, wd, bd, spec: BlockSpec, h1p, k2, out):
    """The block as plain autograd ops, its relu and dropout masks taken from what forward kept
    (``h1p`` is nonzero exactly where unit 1 passes; ``k2`` is unit 2's mask; ``out`` > 0 where
    the residual relu passes, or None). Given the masks the block is linear, so this graph has
    the block's exact first and second derivatives."""
    d, pad = spec.dilation, spec.padding
    left, t = pad[0], x.shape[-1]
    pass1 = h1p[:, :, left : left + t] != 0
    h1 = F.conv1d(_pad(x, pad), w1, b1, dilation=d) * pass1 / (1.0 - spec.p1)
    z2 = F.conv1d(_pad(h1, pad), w2, b2, dilation=d) * k2 / (1.0 - spec.p2)
    y = z2 + (x if wd is None else F.conv1d(x, wd, bd))
    return y if out is None else y * (out > 0)
