"""Property-based tests (hypothesis) over random model configurations and inputs.

Each property is checked on configurations no one wrote by hand: causality (changing the
future never changes the past, bit for bit, in float64), save/load round trips (identical
outputs), and streaming (consecutive ``step`` chunks equal one full pass). Example counts are
bounded so the file runs in well under a minute on two cores.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import torchtcn
from torchtcn.layers import ACTIVATIONS

SETTINGS = dict(
    deadline=None,
    derandomize=True,  # the same examples on every run: a failure here is reproducible
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@st.composite
def tcn_kwargs(draw, causal=None):
    """Random but small TCN constructor arguments covering every architectural option."""
    n_blocks = draw(st.integers(1, 3))
    channels = draw(st.lists(st.integers(1, 5), min_size=n_blocks, max_size=n_blocks))
    dilations = draw(
        st.one_of(st.none(), st.lists(st.integers(1, 4), min_size=n_blocks, max_size=n_blocks))
    )
    return dict(
        in_channels=draw(st.integers(1, 3)),
        channels=channels,
        kernel_size=draw(st.integers(1, 4)),
        dilations=dilations,
        norm=draw(st.sampled_from(["weight", "batch", "layer", None])),
        activation=draw(st.sampled_from(sorted(ACTIVATIONS))),
        causal=draw(st.booleans()) if causal is None else causal,
        layout=draw(st.sampled_from(["NCL", "NLC"])),
        gate=draw(st.sampled_from(["glu", "wavenet", None])),
        skip_connections=draw(st.booleans()),
        residual_activation=draw(st.booleans()),
        init_std=draw(st.sampled_from([0.01, 0.3, None])),
    )


def build(kwargs: dict, dtype=torch.float64) -> torchtcn.TCN:
    model = torchtcn.TCN(**kwargs).to(dtype).eval()
    # Non-trivial batch-norm statistics, so eval-mode batch norm is not the identity.
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model


def sequence(model: torchtcn.TCN, n: int, t: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, model.in_channels, t, generator=g, dtype=dtype)
    return x if model.layout == "NCL" else x.transpose(1, 2)


def time_slice(y: torch.Tensor, layout: str, sl: slice) -> torch.Tensor:
    return y[:, :, sl] if layout == "NCL" else y[:, sl, :]


@settings(max_examples=50, **SETTINGS)
@given(
    kwargs=tcn_kwargs(),
    n=st.integers(1, 3),
    t=st.integers(2, 40),
    cut=st.floats(0.0, 1.0, exclude_max=True),
    seed=st.integers(0, 2**16),
)
def test_future_never_changes_the_past_beyond_lookahead(kwargs, n, t, cut, seed):
    model = build(kwargs)
    x = sequence(model, n, t, seed)
    t0 = 1 + int(cut * (t - 1))  # first perturbed step, in 1..t-1
    x2 = x.clone()
    noise = torch.randn_like(time_slice(x2, model.layout, slice(t0, None))) * 10
    time_slice(x2, model.layout, slice(t0, None)).add_(noise)
    with torch.no_grad():
        y, y2 = model(x), model(x2)
    # A non-causal model may look ``lookahead`` steps ahead; everything before that is fixed.
    past = slice(0, max(0, t0 - model.lookahead))
    assert torch.equal(time_slice(y, model.layout, past), time_slice(y2, model.layout, past))


@settings(max_examples=40, **SETTINGS)
@given(kwargs=tcn_kwargs(), t=st.integers(1, 30), seed=st.integers(0, 2**16))
def test_save_load_round_trip_identical_outputs(kwargs, t, seed, tmp_path_factory):
    model = build(kwargs, dtype=torch.float32)
    path = tmp_path_factory.mktemp("rt") / "model.safetensors"
    torchtcn.save(model, path)
    loaded = torchtcn.load(path)
    assert loaded.config == model.config
    x = sequence(model, 2, t, seed, dtype=torch.float32)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2), k1


@settings(max_examples=15, **SETTINGS)
@given(
    name=st.sampled_from(["lstm", "gru", "rnn"]),
    hidden=st.integers(1, 6),
    layers=st.integers(1, 2),
    t=st.integers(1, 20),
    seed=st.integers(0, 2**16),
)
def test_recurrent_save_load_round_trip(name, hidden, layers, t, seed, tmp_path_factory):
    model = torchtcn.create_model(name, in_channels=2, hidden_size=hidden, num_layers=layers)
    model.eval()
    path = tmp_path_factory.mktemp("rt") / f"{name}.safetensors"
    torchtcn.save(model, path)
    loaded = torchtcn.load(path)
    x = torch.randn(2, 2, t, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def _chunks(t: int, cuts: list[int]) -> list[slice]:
    edges = sorted({0, t, *(c for c in cuts if 0 < c < t)})
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]


def _stream(model, x: torch.Tensor, cuts: list[int]) -> torch.Tensor:
    layout = getattr(model, "layout", "NCL")
    t = x.shape[2] if layout == "NCL" else x.shape[1]
    state = model.init_state(batch_size=x.shape[0])
    outs = []
    with torch.no_grad():
        for sl in _chunks(t, cuts):
            y, state = model.step(time_slice(x, layout, sl).contiguous(), state)
            outs.append(y)
    return torch.cat(outs, dim=2 if layout == "NCL" else 1)


@settings(max_examples=30, **SETTINGS)
@given(
    kwargs=tcn_kwargs(causal=True),
    n=st.integers(1, 3),
    t=st.integers(1, 40),
    cuts=st.lists(st.integers(1, 39), max_size=6),
    seed=st.integers(0, 2**16),
)
def test_tcn_streaming_equals_full_pass(kwargs, n, t, cuts, seed):
    if not hasattr(torchtcn.TCN, "step"):
        pytest.skip("TCN.step (exact streaming, streaming.py) has not landed yet")
    model = build(kwargs)
    x = sequence(model, n, t, seed)
    with torch.no_grad():
        full = model(x)
    streamed = _stream(model, x, cuts)
    assert streamed.shape == full.shape
    torch.testing.assert_close(streamed, full, rtol=1e-10, atol=1e-12)


@settings(max_examples=15, **SETTINGS)
@given(
    name=st.sampled_from(["lstm", "gru", "rnn"]),
    layers=st.integers(1, 2),
    n=st.integers(1, 3),
    t=st.integers(1, 25),
    cuts=st.lists(st.integers(1, 24), max_size=5),
    seed=st.integers(0, 2**16),
)
def test_recurrent_streaming_equals_full_pass(name, layers, n, t, cuts, seed):
    model = torchtcn.create_model(name, in_channels=2, hidden_size=4, num_layers=layers)
    model = model.double().eval()
    x = torch.randn(n, 2, t, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    with torch.no_grad():
        full = model(x)
    torch.testing.assert_close(_stream(model, x, cuts), full, rtol=1e-10, atol=1e-12)
