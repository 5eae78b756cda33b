"""The fast training path: the fused residual block, its dropout, low_memory, mixed precision,
torch.compile, and the training benchmarks' plumbing.

The fused block must compute the same function, with the same gradients, as a straightforward
block written here from ``F.conv1d`` (float64, exact up to rounding), given the same dropout
masks; the masks are recorded by wrapping :func:`torchtcn.fused.drop_`, which draws them.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torchtcn import fused
from torchtcn.bench import common, memory, train
from torchtcn.heads import LanguageModel
from torchtcn.layers import ChannelDropout, Dropout
from torchtcn.model import TCN


# -- a plain reference TCN, written from F.conv1d ------------------------------------------------
def reference_forward(model: TCN, x: torch.Tensor, masks: list[torch.Tensor]) -> torch.Tensor:
    """The model's function with explicit dropout ``masks`` (consumed in order: unit 1 then
    unit 2 of each block), from the weights in the model's module tree."""
    cfg = model.config
    masks = list(masks)
    h = x.transpose(1, 2) if cfg.layout == "NLC" else x
    skip_sum = None
    for i, block in enumerate(model.blocks):
        inp = h
        for unit in (block.unit1, block.unit2):
            conv = unit.conv
            pad = conv.time_padding
            z = F.conv1d(F.pad(h, pad), conv.weight, conv.bias, dilation=conv.dilation[0])
            h = torch.relu(z)
            if cfg.dropout > 0:
                h = h * masks.pop(0).to(h.dtype) / (1.0 - cfg.dropout)
        res = inp if block.downsample is None else block.downsample(inp)
        h = h + res
        if cfg.residual_activation:
            h = torch.relu(h)
        if model.skips is not None:
            s = model.skips[i](h)
            skip_sum = s if skip_sum is None else skip_sum + s
    assert not masks, "unused masks: the fused path drew fewer than the reference needs"
    if skip_sum is not None:
        h = torch.relu(skip_sum)
    return h.transpose(1, 2) if cfg.layout == "NLC" else h


@pytest.fixture
def recorded_masks(monkeypatch):
    """Record every dropout mask the fused path draws (same RNG use as the real drop_)."""
    masks = []
    original = fused.drop_

    def recording_drop_(t, p, per_channel=False):
        if p == 0.0:
            return t
        shape = (t.shape[0], t.shape[1], 1) if per_channel else t.shape
        keep = torch.ones(shape, dtype=torch.bool, device=t.device)
        original(keep, p, per_channel)  # draws exactly what the real call would
        masks.append(keep.clone())
        return t.logical_and_(keep) if t.dtype == torch.bool else t.mul_(keep.to(t.dtype))

    monkeypatch.setattr(fused, "drop_", recording_drop_)
    return masks


@pytest.fixture
def fused_calls(monkeypatch):
    """Count the fused blocks run (to prove a test exercises the fused path)."""
    calls = []
    original = fused.FusedBlockFunction.apply

    def spy(*args):
        calls.append(args[-1])
        return original(*args)

    monkeypatch.setattr(fused.FusedBlockFunction, "apply", spy)
    return calls


CONFIGS = [
    dict(),
    dict(dropout_kind="channel"),
    dict(causal=False),
    dict(residual_activation=False),
    dict(norm=None),
    dict(kernel_size=1),
    dict(layout="NLC"),
    dict(skip_connections=True),
    dict(dilations=[1, 3, 2], kernel_size=4),
    dict(dropout=0.6),  # above the gap sampler's range: the dense mask path
    dict(dropout=0.0),
]


def make(**overrides) -> TCN:
    kw = dict(in_channels=3, channels=[8, 8, 6], kernel_size=3, dropout=0.2)
    kw.update(overrides)
    return TCN(**kw).double().train()


def input_for(model: TCN, n=2, t=37, requires_grad=True):
    shape = (n, t, model.in_channels) if model.layout == "NLC" else (n, model.in_channels, t)
    return torch.randn(*shape, dtype=torch.float64, requires_grad=requires_grad)


def grads_of(model, x, out):
    weight = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    params = list(model.parameters())
    return torch.autograd.grad((out * weight).sum(), [x, *params])


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "default")
def test_fused_equals_reference_float64(cfg, recorded_masks, fused_calls):
    model = make(**cfg)
    x = input_for(model)
    out = model(x)
    assert len(fused_calls) == len(model.blocks), "the fused path was not taken"
    dropout = model.config.dropout
    assert len(recorded_masks) == (2 * len(model.blocks) if dropout > 0 else 0)
    if model.config.dropout_kind == "channel" and dropout > 0:
        assert all(m.shape[2] == 1 for m in recorded_masks), "channel dropout drew per element"
    ref = reference_forward(model, x, recorded_masks)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(grads_of(model, x, out), grads_of(model, x, ref)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


LAST_STEP_CONFIGS = [
    dict(),
    dict(dropout_kind="channel"),
    dict(residual_activation=False),
    dict(dropout=0.6),
    dict(low_memory=True),
    dict(low_memory=True, dropout_kind="channel"),
    dict(low_memory=True, dropout=0.6),
    dict(causal=False, kernel_size=3),  # padding (2d/2 each side): a multiple of d
    dict(channels=[8, 8, 6, 6], dilations=[1, 2, 4, 8]),
]


SPARSE_CASES = [(cfg, [-1]) for cfg in LAST_STEP_CONFIGS] + [
    (cfg, steps) for cfg in (dict(), dict(low_memory=True)) for steps in ([-1, -2], [-3, -7])
]


@pytest.mark.parametrize(
    "cfg, steps", SPARSE_CASES,
    ids=lambda v: (",".join(f"{k}={x}" for k, x in v.items()) or "default")
    if isinstance(v, dict) else "steps" + "".join(map(str, v)),
)
def test_sparse_time_gradients_equal_reference(cfg, steps, recorded_masks, monkeypatch):
    """A loss on a few steps: blocks run their backward on the residue classes carrying
    gradient; the result must equal the reference's exactly."""
    residue_runs = []
    original = fused._residue_backward
    monkeypatch.setattr(fused, "_residue_backward",
                        lambda *a: residue_runs.append(a[1].tolist()) or original(*a))
    model = make(**cfg)
    x = input_for(model, t=64)
    out = model(x)
    masks = list(recorded_masks)
    ref = reference_forward(model, x, masks)
    weight = torch.zeros_like(out)
    time_axis = 1 if model.layout == "NLC" else 2
    for t in steps:
        weight.select(time_axis, t).normal_()
    params = list(model.parameters())
    got = torch.autograd.grad((out * weight).sum(), [x, *params])
    assert residue_runs, "no block took the residue path"
    want = torch.autograd.grad((ref * weight).sum(), [x, *params])
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("t, steps", [(29, [-1]), (29, [-1, 21]), (6, [2]), (13, [0, 5])])
@pytest.mark.parametrize("cfg", [dict(causal=False, channels=[6] * 4),
                                 dict(causal=False, channels=[6] * 4, low_memory=True),
                                 dict(causal=False, kernel_size=5, dropout=0.0)],
                         ids=["noncausal", "noncausal-low_memory", "noncausal-k5"])
def test_sparse_gradients_of_a_non_causal_model_at_any_length(cfg, t, steps, recorded_masks):
    """A non-causal block's right padding reads the last steps of every residue class: with T
    not a multiple of the dilation (a padded batch read at each sequence's last step) the
    gradients must still equal the reference's (they were off by up to 50%)."""
    model = make(**cfg)
    x = input_for(model, t=t)
    out = model(x)
    ref = reference_forward(model, x, list(recorded_masks))
    weight = torch.zeros_like(out)
    for s in steps:
        weight[..., s].normal_()
    params = list(model.parameters())
    got = torch.autograd.grad((out * weight).sum(), [x, *params])
    want = torch.autograd.grad((ref * weight).sum(), [x, *params])
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_no_gradient_reaching_a_block():
    model = make()
    x = input_for(model)
    out = model(x)
    (gx,) = torch.autograd.grad((out * 0).sum(), [x])
    assert torch.equal(gx, torch.zeros_like(x))


def test_fused_gradcheck_with_dropout():
    model = make(in_channels=2, channels=[3, 3], dropout=0.3)
    x = input_for(model, n=2, t=9)

    def f(x, *params):
        torch.manual_seed(3)  # the same masks at every evaluation
        return model(x)

    assert torch.autograd.gradcheck(f, (x,), eps=1e-6, atol=1e-8, fast_mode=True)


@pytest.mark.parametrize("cfg", [dict(), dict(dropout=0.0), dict(low_memory=True),
                                 dict(residual_activation=False, dropout_kind="channel"),
                                 dict(channels=[3, 3], in_channels=3)],  # no 1x1 downsample
                         ids=["default", "no-dropout", "low_memory", "no-residual-relu", "same-width"])
def test_fused_gradgradcheck(cfg, fused_calls):
    """Double backward (gradient penalties, Hessian-vector products) through the fused block."""
    model = make(**{"in_channels": 2, "channels": [3, 4], "dropout": 0.3, **cfg})
    x = input_for(model, n=2, t=9)

    def f(x, *params):
        torch.manual_seed(3)  # the same masks at every evaluation
        return model(x)

    assert torch.autograd.gradgradcheck(f, (x,), eps=1e-6, atol=1e-7, fast_mode=True)
    assert fused_calls, "the fused path was not taken"


def test_fused_gradient_penalty_equals_module_path(fused_calls):
    """The gradient of a gradient norm (as in WGAN-GP) is the module path's, with dropout."""
    model = make(in_channels=2, channels=[5, 5, 4], dropout=0.2, low_memory=False)
    x = input_for(model, n=3, t=21)

    def penalty_grads():
        torch.manual_seed(5)
        (gx,) = torch.autograd.grad(model(x).square().sum(), [x], create_graph=True)
        return torch.autograd.grad(gx.square().sum(), [x, *model.parameters()])

    fast = penalty_grads()
    assert fused_calls
    handles = _force_module_path(model)
    n_fused = len(fused_calls)
    slow = penalty_grads()
    assert len(fused_calls) == n_fused, "hooks did not force the module path"
    for h in handles:
        h.remove()
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def _force_module_path(model):
    # a forward hook on a submodule makes the block take the module-by-module path
    return [b.unit1.conv.register_forward_hook(lambda *a: None) for b in model.blocks]


@pytest.mark.parametrize("kind", ["element", "channel"])
def test_fused_equals_module_path_same_masks_float32(kind, fused_calls):
    """The module path with the library's Dropout draws the same masks in the same order."""
    model = TCN(2, [16, 16], kernel_size=5, dropout=0.1, dropout_kind=kind).train()
    x = torch.randn(4, 2, 200, requires_grad=True)
    torch.manual_seed(11)
    fast = model(x)
    g_fast = grads_of(model, x, fast)
    assert fused_calls
    handles = _force_module_path(model)
    n_fused = len(fused_calls)
    torch.manual_seed(11)
    slow = model(x)
    assert len(fused_calls) == n_fused, "hooks did not force the module path"
    g_slow = grads_of(model, x, slow)
    for h in handles:
        h.remove()
    assert_close_float32(fast, slow)
    for a, b in zip(g_fast, g_slow):
        assert_close_float32(a, b)


def assert_close_float32(a, b):
    # float32: the paths sum in different orders (the dropout scale is folded into weights)
    torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4 * b.abs().max().item() + 1e-7)


def test_fused_equals_torch_reference_path_without_dropout():
    model = TCN(3, [12, 12, 12], kernel_size=3, dropout=0.0).train()
    x = torch.randn(3, 3, 90, requires_grad=True)
    fast = model(x)
    g_fast = grads_of(model, x, fast)
    with fused.disabled():
        slow = model(x)
        g_slow = grads_of(model, x, slow)
    assert_close_float32(fast, slow)
    for a, b in zip(g_fast, g_slow):
        assert_close_float32(a, b)


def test_hooks_and_inference_take_the_module_path(fused_calls):
    model = make()
    seen = []
    model.blocks[1].unit2.activation.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    model(input_for(model))
    assert seen and len(fused_calls) == len(model.blocks) - 1
    with torch.no_grad():
        model.eval()(input_for(model, requires_grad=False))
    assert len(fused_calls) == len(model.blocks) - 1


def test_backward_hooks_take_the_module_path_and_fire(fused_calls):
    import torch.nn.modules.module as module_globals

    model = make()
    fired = []
    model.blocks[0].unit1.conv.register_full_backward_hook(lambda m, gi, go: fired.append("b"))
    model.blocks[1].unit2.register_full_backward_pre_hook(lambda m, go: fired.append("pre"))
    model(input_for(model)).sum().backward()
    assert sorted(fired) == ["b", "pre"] and len(fused_calls) == len(model.blocks) - 2
    fresh = make()
    handle = module_globals.register_module_full_backward_hook(lambda m, gi, go: None)
    try:
        fresh(input_for(fresh)).sum().backward()
    finally:
        handle.remove()
    assert len(fused_calls) == len(model.blocks) - 2  # a global hook: no block fused


@pytest.mark.parametrize("norm", ["batch", "layer"])
def test_other_norms_use_module_path(norm, fused_calls):
    model = make(norm=norm)
    model(input_for(model)).sum().backward()
    assert not fused_calls


# -- low_memory -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "cfg", [dict(), dict(dropout_kind="channel"), dict(norm="layer"), dict(dropout=0.5)],
    ids=["fused-element", "fused-channel", "module-path", "dense-masks"],
)
def test_low_memory_gradients_equal_default_with_dropout(cfg):
    model = make(**cfg)
    lean = TCN.from_config(dataclasses.replace(model.config, low_memory=True)).double().train()
    lean.load_state_dict(model.state_dict())
    x = input_for(model)
    results = []
    for m in (model, lean):
        torch.manual_seed(5)
        out = m(x)
        grads = grads_of(m, x, out)
        after = torch.rand(3)  # backward's recomputation must leave the RNG where it was
        results.append((out, grads, after))
    (o1, g1, r1), (o2, g2, r2) = results
    torch.testing.assert_close(o1, o2, rtol=0, atol=0)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(r1, r2, rtol=0, atol=0)


def test_low_memory_batch_norm_counts_each_batch_once():
    # the recompute in backward sees the batch again; the running statistics must not
    models = [make(norm="batch", low_memory=lm) for lm in (False, True)]
    models[1].load_state_dict(models[0].state_dict())
    x = input_for(models[0])
    for m in models:
        torch.manual_seed(7)  # the same dropout masks in both
        for _ in range(2):
            m(x).sum().backward()
    plain, lean = (dict(m.named_buffers()) for m in models)
    assert int(lean["blocks.0.unit1.norm.num_batches_tracked"]) == 2
    for name, value in plain.items():
        torch.testing.assert_close(lean[name], value, rtol=0, atol=0, msg=name)


def test_low_memory_backward_after_leaving_fused_disabled():
    # the recompute replays the path the forward took, not the one in force at backward
    model = make(low_memory=True, dropout=0.3)
    reference = make(dropout=0.3)
    reference.load_state_dict(model.state_dict())
    x = input_for(model)
    results = []
    for m in (reference, model):
        torch.manual_seed(3)
        with fused.disabled():
            out = m(x)
        results.append((out, grads_of(m, x, out)))
    (o1, g1), (o2, g2) = results
    torch.testing.assert_close(o1, o2, rtol=0, atol=0)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_low_memory_keeps_far_less_for_backward():
    kw = dict(in_channels=1, channels=[16] * 4, kernel_size=5, dropout=0.05)
    length = 300
    x = torch.randn(4, 1, length)
    sizes = {}
    for name, m in (("default", TCN(**kw)), ("low", TCN(**kw, low_memory=True))):
        sizes[name] = memory.saved_for_backward_bytes(lambda m=m: m.train()(x).square().mean())
    with fused.disabled():
        sizes["module"] = memory.saved_for_backward_bytes(lambda: TCN(**kw).train()(x).square().mean())
    act = 4 * 16 * length * 4  # one float activation
    # 3 block inputs (the first has 1 channel), the output (kept by square()), and weights
    assert sizes["low"] < 4 * act + 150_000
    assert sizes["default"] < 0.5 * sizes["module"]
    assert sizes["low"] < 0.5 * sizes["default"]


# -- dropout masks --------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [0.05, 0.2, 0.5])
def test_keep_mask_is_iid_bernoulli(p):
    n = 400_000
    keep = fused.keep_mask((4, 100, 1000), p, "cpu").flatten()
    drop = (~keep).double()
    sigma = math.sqrt(p * (1 - p) / n)
    assert abs(drop.mean().item() - p) < 5 * sigma
    half = n // 2
    for part in (drop[:half], drop[half:]):  # no drift along the sequence
        assert abs(part.mean().item() - p) < 5 * sigma * math.sqrt(2)
    for lag in (1, 2, 1000):  # neighbours independent: P(both dropped) = p^2
        both = (drop[:-lag] * drop[lag:]).mean().item()
        assert abs(both - p * p) < 5 * math.sqrt(p * p * (1 - p * p) / n) + 1e-12


def test_gap_sampler_rounds_are_seamless(monkeypatch):
    torch.manual_seed(2)
    one_round = fused._gap_drop_positions(5000, 0.1, "cpu")
    monkeypatch.setattr(fused, "_GAP_SLACK_SIGMAS", -1e9)  # one gap per round: many rounds
    torch.manual_seed(2)
    many_rounds = fused._gap_drop_positions(5000, 0.1, "cpu")
    assert torch.equal(one_round, many_rounds)
    assert (one_round.diff() > 0).all() and one_round.max() < 5000


@pytest.mark.parametrize("p", [0.1, 0.7])
@pytest.mark.parametrize("per_channel", [False, True])
def test_drop_draws_what_keep_mask_draws(p, per_channel):
    shape = (3, 5, 40)
    torch.manual_seed(4)
    keep = fused.keep_mask((3, 5, 1) if per_channel else shape, p, "cpu")
    torch.manual_seed(4)
    t = fused.drop_(torch.ones(shape), p, per_channel)
    assert torch.equal(t, keep.expand(shape).float())
    torch.manual_seed(4)
    b = fused.drop_(torch.ones(shape, dtype=torch.bool), p, per_channel)
    assert torch.equal(b, keep.expand(shape))


@pytest.mark.parametrize("cls, per_channel", [(Dropout, False), (ChannelDropout, True)])
def test_dropout_modules(cls, per_channel):
    p = 0.25
    module = cls(p).train()
    x = torch.randn(6, 50, 300, requires_grad=True)
    torch.manual_seed(9)
    y = module(x)
    torch.manual_seed(9)
    keep = fused.keep_mask((6, 50, 1) if per_channel else (6, 50, 300), p, "cpu")
    torch.testing.assert_close(y, x * keep / (1 - p))
    (g,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(g, (keep / (1 - p)).expand_as(x))
    if per_channel:
        zero_rows = (y == 0).all(dim=2)
        assert zero_rows.any() and ((y != 0).all(dim=2) | zero_rows).all()
    # the fraction of zeros is p (5 sigma)
    units = keep.numel()
    assert abs((~keep).float().mean().item() - p) < 5 * math.sqrt(p * (1 - p) / units)
    assert torch.equal(module.eval()(x), x)


@pytest.mark.parametrize("p", [1e-19, 1e-300])
def test_a_tiny_dropout_probability_keeps_everything(p):
    """Gaps of a tiny p exceed int64 (they overflowed into an out-of-range index)."""
    assert fused.keep_mask((1000,), p, "cpu").all()
    model = TCN(2, [4], dropout=p).train()
    x = torch.randn(2, 2, 50)
    torch.testing.assert_close(model(x), model.eval()(x))


def test_keep_mask_rejects_bad_p():
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        fused.keep_mask((2, 2), 1.0, "cpu")


# -- mixed precision and torch.compile --------------------------------------------------------------
def test_bf16_autocast_cpu_matches_module_path():
    model = TCN(2, [16, 16], kernel_size=3, dropout=0.1).train()
    x = torch.randn(3, 2, 120)
    outs = []
    for force_modules in (False, True):
        handles = _force_module_path(model) if force_modules else []
        torch.manual_seed(1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = model(x)
        y.float().square().mean().backward()
        outs.append((y, [p.grad.clone() for p in model.parameters()]))
        model.zero_grad()
        for h in handles:
            h.remove()
    (y1, g1), (y2, g2) = outs
    assert y1.dtype == y2.dtype == torch.bfloat16
    torch.testing.assert_close(y1.float(), y2.float(), rtol=3e-2, atol=3e-2)
    for a, b in zip(g1, g2):
        assert a.dtype == torch.float32 and torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=0.1, atol=0.05 * b.abs().max().item() + 1e-6)


def test_autocast_leaves_a_float64_model_in_float64():
    """torch's autocast casts float32 only: the fused block must not run a float64 model in
    bfloat16 either (its output was bf16, off by 6e-3, where the module path gave float64)."""
    model = TCN(2, [6, 6], kernel_size=3, dropout=0.0).double().train()
    x = torch.randn(2, 2, 30, dtype=torch.float64, requires_grad=True)
    want = model(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = model(x)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_autocast_keeps_a_float32_identity_residual_in_float32(fused_calls):
    """Same-width blocks on a float32 input: the module path's residual sum is float32 (the
    convs' bf16 output promoted), so its output is float32; the fused node rounded the
    residual to bf16 and returned bf16 (off by 5.7e-3)."""
    model = TCN(4, [4, 4], kernel_size=3).train()
    x = torch.randn(2, 4, 40)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = model(x)
        with fused.disabled():
            want = model(x)
    assert got.dtype == want.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.gpu
@pytest.mark.parametrize("low_memory", [False, True])
def test_cuda_fused_and_amp(low_memory):
    dev = torch.device("cuda")
    model = TCN(2, [16, 16], kernel_size=3, dropout=0.1, low_memory=low_memory).to(dev).train()
    x = torch.randn(3, 2, 120, device=dev, requires_grad=True)
    torch.manual_seed(1)
    fast = model(x)
    g_fast = grads_of(model, x, fast)
    handles = _force_module_path(model)
    torch.manual_seed(1)
    slow = model(x)
    g_slow = grads_of(model, x, slow)
    for h in handles:
        h.remove()
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-5)
    for a, b in zip(g_fast, g_slow):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)
    step = common.make_step(model, dev, common.StepOptions(amp="fp16"))
    losses = [step(x.detach(), torch.zeros(3, dtype=torch.long, device=dev)) for _ in range(2)]
    assert all(torch.isfinite(loss) for loss in losses)


@pytest.mark.slow
@pytest.mark.parametrize("low_memory", [False, True])
def test_torch_compile_tiny_model(low_memory):
    try:
        compiled_fn = torch.compile(lambda t: t * 2)
        compiled_fn(torch.ones(2))
    except Exception as e:  # no working compiler toolchain on this machine
        pytest.skip(f"torch.compile does not work here: {type(e).__name__}: {e}")
    # low_memory: compile refused the recompute contexts of checkpoint (BackendCompilerFailed)
    model = TCN(2, [4, 4], kernel_size=2, dropout=0.0, low_memory=low_memory).train()
    x = torch.randn(2, 2, 16, requires_grad=True)
    eager = model(x)
    g_eager = grads_of(model, x, eager)
    compiled = torch.compile(model)
    out = compiled(x)
    g_out = grads_of(model, x, out)
    torch.testing.assert_close(out, eager, rtol=1e-5, atol=1e-6)
    for a, b in zip(g_out, g_eager):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_torch_compile_language_model_in_one_graph():
    # the eager token-range check must stay out of the compiled graph (no graph break)
    try:
        torch.compile(lambda t: t * 2)(torch.ones(2))
    except Exception as e:
        pytest.skip(f"torch.compile does not work here: {type(e).__name__}: {e}")
    lm = LanguageModel(TCN(8, [8, 8], kernel_size=2), vocab_size=20).eval()
    tokens = torch.randint(0, 20, (2, 9))
    out = torch.compile(lm, fullgraph=True)(tokens)
    torch.testing.assert_close(out, lm(tokens), rtol=1e-5, atol=1e-6)


# -- the benchmarks' plumbing ---------------------------------------------------------------------
def test_interleaved_times_rotates_and_counts():
    order = []
    steps = {k: (lambda k=k: order.append(k)) for k in "abc"}
    times = common.interleaved_times(steps, repeats=3, warmup=1)
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3, "c": 3}
    assert order == list("abc") + list("abc") + list("bca") + list("cab")


def test_contenders_match_the_paper_sizes():
    sizes = {k: common.parameters(c.build()) for k, c in common.CONTENDERS.items()
             if common.available(k) is None}
    assert sizes["lstm"] == 70_470
    for key, n in sizes.items():
        assert abs(n - 70_470) / 70_470 < 0.08, f"{key} has {n} parameters"


def test_bench_train_small_run_writes_page(tmp_path, capsys):
    import argparse

    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    md, js = tmp_path / "perf.md", tmp_path / "perf.json"
    args = parser.parse_args([
        "--models", "torchtcn-lowmem,lstm", "--batch-size", "2", "--seq-len", "16",
        "--repeats", "1", "--warmup", "1", "--allocators", "tuned", "--markdown", str(md), "--json", str(js),
        "--device", "cpu",
    ])
    assert train.run(args) == 0
    printed = capsys.readouterr().out
    assert "torchtcn low_memory" in printed and "LSTM-130" in printed
    text = md.read_text()
    assert "| torchtcn low_memory |" in text and "## Method" in text
    import json

    record = json.loads(js.read_text())
    timing = record["timing"]["tuned"]
    assert {r["model"] for r in timing} == {"torchtcn-lowmem", "lstm"}
    lstm = next(r for r in timing if r["model"] == "lstm")
    assert lstm["speedup_vs_lstm"] == pytest.approx(1.0)


def test_memory_measure_in_subprocess():
    res = memory.measure_in_subprocess("torchtcn-lowmem", 2, 64)
    assert res["model"] == "torchtcn-lowmem" and res["peak_mib"] >= 0 and res["saved_mib"] > 0


def test_memory_table_ratios():
    def run(peak, allocator):
        return {"peak_mib": peak, "saved_mib": 1.0, "allocator": allocator}

    runs = {"torchtcn": [run(100.0, "glibc"), run(80.0, "live")],
            "pytorch-tcn": [run(400.0, "glibc"), run(160.0, "live")],
            "lstm": [run(200.0, "glibc"), run(320.0, "live")]}
    header, rows, records = memory.table(runs)
    rec = {r["model"]: r for r in records}
    assert rec["torchtcn"]["glibc"]["vs_pytorch_tcn"] == pytest.approx(0.25)
    assert rec["torchtcn"]["glibc"]["vs_lstm"] == pytest.approx(0.5)
    assert rec["torchtcn"]["live"]["vs_pytorch_tcn"] == pytest.approx(0.5)
    assert rec["torchtcn"]["live"]["vs_lstm"] == pytest.approx(0.25)
    assert rows[0][0] == "torchtcn" and len(rows[0]) == len(header)
