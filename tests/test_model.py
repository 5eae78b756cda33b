"""The TCN itself: shapes, causality, receptive field, parameters, config, gradients, errors."""

from __future__ import annotations

import dataclasses
import itertools
import random

import pytest
import torch
from torch import nn

import torchtcn
from torchtcn import TCN, TCNConfig

NORMS = ["weight", "batch", "layer", None]


def make_model(**overrides) -> TCN:
    kwargs = dict(in_channels=3, channels=[4, 5], kernel_size=3, activation="tanh")
    kwargs.update(overrides)
    model = TCN(**kwargs).double().eval()
    # Non-trivial batch-norm statistics, so eval-mode batch norm is not an identity.
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model


def to_layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    return x if layout == "NCL" else x.transpose(1, 2)


def time_slice(y: torch.Tensor, layout: str, sl) -> torch.Tensor:
    return y[:, :, sl] if layout == "NCL" else y[:, sl, :]


GRID = [
    dict(norm=norm, causal=causal, kernel_size=k, layout=layout)
    for norm, causal, k, layout in itertools.product(NORMS, [True, False], range(1, 8), ["NCL", "NLC"])
]
EXTRA = [
    dict(dilations=[3, 1]),
    dict(dilations=[1, 5], causal=False, kernel_size=4),
    dict(gate="glu"),
    dict(gate="wavenet", causal=False),
    dict(skip_connections=True, channels=[4, 6, 5]),
    dict(residual_activation=False, activation="gelu"),
    dict(activation="elu", channels=[3, 3]),
    dict(activation="silu"),
    dict(activation="leaky_relu"),
    dict(init_std=None),
]
CONFIGS = GRID + EXTRA


def config_id(cfg: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in cfg.items())


@pytest.mark.parametrize("cfg", CONFIGS, ids=config_id)
def test_output_shape_every_length(cfg):
    model = make_model(**cfg)
    layout = cfg.get("layout", "NCL")
    for T in (1, 2, 17):
        x = to_layout(torch.randn(2, 3, T, dtype=torch.float64), layout)
        y = model(x)
        expected = (2, model.out_channels, T) if layout == "NCL" else (2, T, model.out_channels)
        assert y.shape == expected


@pytest.mark.parametrize("cfg", [c for c in CONFIGS if c.get("causal", True)], ids=config_id)
def test_causal_past_is_bit_identical_when_future_changes(cfg):
    model = make_model(**cfg)
    layout = cfg.get("layout", "NCL")
    x = torch.randn(2, 3, 40, dtype=torch.float64)
    for t0 in (0, 1, 20, 39):
        x2 = x.clone()
        x2[:, :, t0:] = torch.randn_like(x2[:, :, t0:]) * 10
        y1 = time_slice(model(to_layout(x, layout)), layout, slice(0, t0))
        y2 = time_slice(model(to_layout(x2, layout)), layout, slice(0, t0))
        assert torch.equal(y1, y2), f"output before t={t0} changed when the future changed"


def _changes(model, x, layout, t_out, t_in) -> bool:
    x2 = x.clone()
    x2[:, :, t_in] += 1.0
    y1 = time_slice(model(to_layout(x, layout)), layout, t_out)
    y2 = time_slice(model(to_layout(x2, layout)), layout, t_out)
    return not torch.equal(y1, y2)


@pytest.mark.parametrize("cfg", CONFIGS, ids=config_id)
def test_empirical_receptive_field_matches_analytic(cfg):
    model = make_model(**cfg)
    layout = cfg.get("layout", "NCL")
    rf, ahead = model.receptive_field, model.lookahead
    history = rf - 1 - ahead
    T = rf + 6
    x = torch.randn(1, 3, T, dtype=torch.float64)
    t = history + 2  # an output with room on both sides of its window
    assert _changes(model, x, layout, t, t - history), "oldest input inside the field had no effect"
    assert not _changes(model, x, layout, t, t - history - 1), "input before the field had an effect"
    if t + ahead + 1 < T:
        assert not _changes(model, x, layout, t, t + ahead + 1), "input after the field had an effect"
    assert _changes(model, x, layout, t, t + ahead), "newest input inside the field had no effect"
    if model.config.causal:
        assert ahead == 0
    else:
        assert ahead <= (rf - 1) // 2


def test_paper_seq_mnist_parameter_count():
    body = TCN(1, [25] * 8, kernel_size=7, norm="weight")
    head = nn.Linear(25, 10)
    n = sum(p.numel() for p in body.parameters()) + sum(p.numel() for p in head.parameters())
    assert n == 66_910
    assert body.receptive_field == 3061
    model = torchtcn.SequenceModel(body, head="last_step", out_features=10)
    assert torchtcn.count_parameters(model) == 66_910


@pytest.mark.parametrize("cfg", CONFIGS[::7] + EXTRA, ids=config_id)
def test_config_round_trip_gives_identical_outputs(cfg):
    model = make_model(**cfg)
    rebuilt = TCN.from_config(model.config).double().eval()
    rebuilt.load_state_dict(model.state_dict())
    assert rebuilt.config == model.config
    x = to_layout(torch.randn(2, 3, 30, dtype=torch.float64), cfg.get("layout", "NCL"))
    assert torch.equal(model(x), rebuilt(x))
    with pytest.raises(dataclasses.FrozenInstanceError):
        model.config.kernel_size = 9


@pytest.mark.parametrize(
    "cfg",
    [dict(norm=n, dropout=0.1, dropout_kind=dk) for n in NORMS for dk in ("element", "channel")]
    + [dict(gate="glu"), dict(skip_connections=True, channels=[4, 6, 5]), dict(kernel_size=1)],
    ids=config_id,
)
def test_every_parameter_receives_a_gradient(cfg):
    model = make_model(**cfg).train()
    x = torch.randn(4, 3, 25, dtype=torch.float64)
    model(x).square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, f"{name} has a zero gradient"


def test_weight_norm_init_really_takes_effect():
    model = TCN(1, [64] * 2, kernel_size=7, init_std=0.01)
    conv = model.blocks[1].unit1.conv
    assert hasattr(conv, "parametrizations"), "weight norm is not a parametrization"
    assert abs(conv.weight.std().item() - 0.01) < 0.002
    default = TCN(1, [64] * 2, kernel_size=7, init_std=None).blocks[1].unit1.conv
    assert default.weight.std().item() > 0.02  # torch's Kaiming-uniform default is much wider


def test_init_scope_downsample_initialises_only_the_residual_convs():
    # locuslab/TCN's effective init: N(0, 0.01) survives only on the un-normed 1x1 convs
    torch.manual_seed(0)
    model = TCN(1, [64] * 2, kernel_size=7, init_std=0.01, init_scope="downsample")
    assert abs(model.blocks[0].downsample.weight.std().item() - 0.01) < 0.002
    for block in model.blocks:
        for unit in (block.unit1, block.unit2):
            assert unit.conv.weight.std().item() > 0.02, "a main conv got the N(0, 0.01) init"
    torch.manual_seed(0)
    everywhere = TCN(1, [64] * 2, kernel_size=7, init_std=0.01)
    assert abs(everywhere.blocks[1].unit1.conv.weight.std().item() - 0.01) < 0.002
    assert model.config.init_scope == "downsample"
    assert TCN.from_config(model.config).config == model.config


def test_channel_dropout_drops_whole_channels():
    model = TCN(2, [64], kernel_size=2, dropout=0.5, dropout_kind="channel", norm=None)
    drop = model.blocks[0].unit1.dropout
    assert isinstance(drop, nn.Dropout1d)
    y = drop(torch.ones(3, 64, 50))
    per_channel = (y == 0).all(dim=2) | (y != 0).all(dim=2)
    assert per_channel.all()
    elem = TCN(2, [64], dropout=0.5).blocks[0].unit1.dropout(torch.ones(3, 64, 50))
    assert not ((elem == 0).all(dim=2) | (elem != 0).all(dim=2)).all()


def test_low_memory_gradients_equal_default():
    torch.manual_seed(1)
    model = TCN(3, [8, 8, 6], kernel_size=3, dropout=0.2).double()
    fast = TCN.from_config(dataclasses.replace(model.config, low_memory=True)).double()
    fast.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 50, dtype=torch.float64)
    grads = []
    for m in (model, fast):
        m.train()
        torch.manual_seed(7)  # same dropout masks
        m(x).pow(2).sum().backward()
        grads.append([p.grad.clone() for p in m.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("norm", ["layer", "batch", "weight"])
def test_low_memory_double_backward_equals_default(norm):
    """A gradient penalty (create_graph=True, then backward) recomputes a low_memory block
    once per backward: both must work and equal the default mode's (the recompute context
    was a one-shot generator and the second backward raised AttributeError)."""
    torch.manual_seed(1)
    model = TCN(2, [3, 3], kernel_size=3, norm=norm).double().train()
    low = TCN.from_config(dataclasses.replace(model.config, low_memory=True)).double().train()
    low.load_state_dict(model.state_dict())
    x = torch.randn(2, 2, 9, dtype=torch.float64)
    grads = []
    for m in (model, low):
        xx = x.clone().requires_grad_(True)
        (gx,) = torch.autograd.grad(m(xx).pow(2).sum(), xx, create_graph=True)
        gx.pow(2).sum().backward()
        grads.append([p.grad.clone() for p in m.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    for a, b in zip(model.buffers(), low.buffers()):  # batch norm counted the batch once
        assert torch.equal(a, b)


def test_kernel_size_one_works():
    model = TCN(2, [3, 3], kernel_size=1)
    assert model.receptive_field == 1
    assert model(torch.randn(1, 2, 5)).shape == (1, 3, 5)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(kernel_size=0), "kernel_size"),
        (dict(kernel_size=2.0), "kernel_size"),
        (dict(dilations=[1, 0]), r"dilations\[1\]"),
        (dict(dilations=[1]), "dilations must have one entry per block"),
        (dict(channels=[]), "channels"),
        (dict(channels=[4, 0]), r"channels\[1\]"),
        (dict(dropout=1.0), "dropout"),
        (dict(dropout=-0.1), "dropout"),
        (dict(norm="group"), "norm"),
        (dict(activation="swishy"), "activation"),
        (dict(layout="LNC"), "layout"),
        (dict(in_channels=0), "in_channels"),
        (dict(gate="sigmoid"), "gate"),
        (dict(dropout_kind="spatial3d"), "dropout_kind"),
        (dict(init_std=-1.0), "init_std"),
        (dict(init_std=float("inf")), "init_std"),  # built, then gave non-finite outputs
        (dict(init_std=float("nan")), "init_std"),  # was torch's "normal expects std >= 0"
        (dict(init_scope="heads"), "init_scope"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    args = dict(in_channels=3, channels=[4, 4], kernel_size=3)
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=match) as info:
        TCN(**args)
    bad_value = next(iter(kwargs.values()))
    if not isinstance(bad_value, list):
        assert repr(bad_value) in str(info.value) or str(bad_value) in str(info.value)


@pytest.mark.parametrize("name, value", [("init_std", "0.01"), ("init_std", True),
                                         ("dropout", "0.1"), ("kernel_size", "3")])
def test_a_wrongly_typed_argument_is_a_type_error(name, value):
    with pytest.raises(TypeError, match=f"{name} must be"):
        TCN(in_channels=3, channels=[4, 4], **{name: value})


@pytest.mark.parametrize(
    "x,error,match",
    [
        (torch.randn(3, 20), ValueError, r"3-D .*got shape \(3, 20\)"),
        (torch.randn(1, 2, 3, 20), ValueError, "3-D"),
        (torch.randn(2, 4, 20), ValueError, r"3 channels.*got shape \(2, 4, 20\)"),
        (torch.randn(2, 3, 0), ValueError, "at least one time step"),
        (torch.ones(2, 3, 20, dtype=torch.int64), TypeError, "floating-point.*int64"),
        ([[1.0]], TypeError, "torch.Tensor"),
    ],
)
def test_bad_forward_input(x, error, match):
    model = TCN(3, [4], kernel_size=2)
    with pytest.raises(error, match=match):
        model(x)


def test_nlc_layout_names_its_shape():
    model = TCN(3, [4], layout="NLC")
    with pytest.raises(ValueError, match=r"\(N, T, C\)"):
        model(torch.randn(2, 20, 4))


def test_random_dilation_lists():
    rng = random.Random(0)
    for _ in range(5):
        n = rng.randint(1, 4)
        dil = [rng.randint(1, 6) for _ in range(n)]
        k = rng.randint(2, 4)
        model = make_model(channels=[3] * n, dilations=dil, kernel_size=k)
        assert model.receptive_field == 1 + 2 * (k - 1) * sum(dil)
        assert model.dilations == tuple(dil)


def test_integers_of_other_libraries_are_stored_as_plain_ints(tmp_path):
    """numpy / tensor ints (from np.arange, a sweep) build the model; the config holds ints,
    so it saves as JSON and reloads; floats and bools stay refused."""
    import json

    import numpy as np

    model = TCN(np.int64(2), np.array([8, 8]), kernel_size=np.int32(3), dilations=torch.tensor([1, 2]),
                cond_channels=np.int64(0))
    cfg = model.config
    assert cfg == TCNConfig(2, (8, 8), kernel_size=3, dilations=(1, 2))
    assert all(type(v) is int for v in (cfg.in_channels, cfg.kernel_size, *cfg.channels, *cfg.dilations))
    json.dumps(dataclasses.asdict(cfg))
    torchtcn.save(model, tmp_path / "m.safetensors")
    assert torchtcn.load(tmp_path / "m.safetensors").config == cfg
    lstm = torchtcn.create_model("lstm", in_channels=np.int64(1), hidden_size=np.int64(4))
    assert type(lstm.config.hidden_size) is int and lstm.rnn.hidden_size == 4
    for bad in (3.0, True, np.float64(3), torch.tensor(True)):
        with pytest.raises(TypeError, match="kernel_size must be an int"):
            TCN(1, [4], kernel_size=bad)


def test_input_of_another_dtype_is_a_clear_error_except_under_autocast():
    model = TCN(2, [8, 8], kernel_size=3)
    with pytest.raises(ValueError, match=r"TCN input dtype must be the model's: expected torch.float32, "
                                         r"found torch.float64 \(convert the input with x.to"):
        model(torch.randn(1, 2, 5, dtype=torch.float64))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast mixes dtypes on purpose
        assert model(torch.randn(1, 2, 5).bfloat16()).dtype == torch.bfloat16
    assert model.double()(torch.randn(1, 2, 5, dtype=torch.float64)).dtype == torch.float64


def test_none_spelt_as_a_string_means_no_norm_or_gate():
    model = TCN(1, [4, 4], norm="none", gate="none")
    assert model.config.norm is None and model.config.gate is None
    assert model.config == TCN(1, [4, 4], norm=None, gate=None).config


def test_summary_counts_frozen_parameters_and_says_how_many_train():
    model = torchtcn.TCN(1, [8, 8], kernel_size=3)
    model.blocks[0].requires_grad_(False)
    total = sum(p.numel() for p in model.parameters())
    assert torchtcn.count_parameters(model, trainable_only=False) == total
    assert f"total parameters: {total:,} ({torchtcn.count_parameters(model):,} trainable)" in (
        torchtcn.summary(model))
    with pytest.raises(TypeError, match="expected an nn.Module, got str"):
        torchtcn.summary("model.safetensors")
    # the per-block and head columns count frozen parameters too (a frozen block showed 0)
    clf = torchtcn.SequenceModel(torchtcn.TCN(1, [8, 8], kernel_size=3), "last_step", 2)
    before = torchtcn.summary(clf)
    clf.requires_grad_(False)
    assert torchtcn.summary(clf).replace(" (0 trainable)", "") == before
