"""Every registered sequence model passes the same tests (timm's test_models pattern)."""

from __future__ import annotations

import warnings

import pytest
import torch

import torchtcn

SMALL = {
    "tcn": dict(channels=[6, 5], kernel_size=3),
    "lstm": dict(hidden_size=5),
    "gru": dict(hidden_size=5),
    "rnn": dict(hidden_size=5),
}


def build(name: str, layout: str = "NCL"):
    extra = SMALL.get(name, {})
    model = torchtcn.create_model(name, in_channels=3, layout=layout, **extra)
    return model.double().eval()


def test_every_registered_model_has_small_settings():
    assert set(torchtcn.available_models()) <= set(SMALL), "add small settings for new models"
    assert {"tcn", "lstm", "gru", "rnn"} <= set(torchtcn.available_models())


@pytest.fixture(params=torchtcn.available_models())
def name(request):
    return request.param


@pytest.mark.parametrize("layout", ["NCL", "NLC"])
def test_shapes(name, layout):
    model = build(name, layout)
    x = torch.randn(2, 3, 11, dtype=torch.float64)
    y = model(x if layout == "NCL" else x.transpose(1, 2))
    if layout == "NLC":
        y = y.transpose(1, 2)
    assert y.shape == (2, model.out_channels, 11)


def test_causal(name):
    model = build(name)
    x = torch.randn(2, 3, 30, dtype=torch.float64)
    x2 = x.clone()
    x2[:, :, 17:] += 5
    assert torch.equal(model(x)[:, :, :17], model(x2)[:, :, :17])


def test_config_and_save_load_round_trip(name, tmp_path):
    model = build(name)
    path = tmp_path / "m.safetensors"
    torchtcn.save(model, path)
    loaded = torchtcn.load(path).double()
    assert type(loaded) is type(model) and loaded.config == model.config
    x = torch.randn(2, 3, 9, dtype=torch.float64)
    assert torch.equal(model(x), loaded(x))
    rebuilt = type(model).from_config(model.config)
    assert rebuilt.config == model.config


def test_gradients_reach_every_parameter(name):
    model = build(name).train()
    model(torch.randn(2, 3, 9, dtype=torch.float64)).sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


def test_stream_equals_full_pass(name):
    model = build(name)
    x = torch.randn(3, 3, 23, dtype=torch.float64)
    state = model.init_state(batch_size=3)
    outs = []
    for chunk in torch.split(x, [1, 5, 1, 16], dim=2):
        y, state = model.step(chunk, state)
        outs.append(y)
    torch.testing.assert_close(torch.cat(outs, dim=2), model(x), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("layout", ["NCL", "NLC"])
def test_state_contract(name, layout):
    # every model's state: reset / select with nothing to do, clone, flush, wrong dtype
    model = build(name, layout)
    x = torch.randn(3, 3, 8, dtype=torch.float64)
    x = x if layout == "NCL" else x.transpose(1, 2)
    t_dim = 2 if layout == "NCL" else 1
    state = model.init_state(3)
    y1, state = model.step(x.narrow(t_dim, 0, 4), state)
    copy = state.clone()
    assert state.reset([]) is state and state.reset(torch.zeros(3, dtype=torch.bool)) is state
    assert state.select([]).batch_size == 0
    y2, state = model.step(x.narrow(t_dim, 4, 4), state)
    again, _ = model.step(x.narrow(t_dim, 4, 4), copy)  # the clone is untouched by the step
    torch.testing.assert_close(again, y2, rtol=0, atol=0)
    tail, state = model.flush(state)
    assert tail.shape[0] == 3 and tail.shape[t_dim] == getattr(model, "stream_delay", 0)
    with pytest.raises(ValueError, match="float32"):
        model.step(x.narrow(t_dim, 0, 1), build(name, layout).float().init_state(3))
    with pytest.raises(TypeError, match="batch_size must be an int"):
        model.init_state(2.0)


@pytest.mark.parametrize("wrap", ["body", "per_step", "mean"])
def test_flush_resets_so_the_next_sequence_streams_as_if_alone(name, wrap):
    model = build(name)
    if wrap != "body":
        model = torchtcn.SequenceModel(model, head=wrap, out_features=2).double().eval()
    first, second = (torch.randn(2, 3, n, dtype=torch.float64) for n in (12, 9))
    state = model.init_state(2)
    _, state = model.step(first, state)
    _, state = model.flush(state)
    y, state = model.step(second, state)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torchtcn.ReceptiveFieldWarning)
        full = model(second)
    if wrap == "mean":  # the running mean: its last frame is the sequence's prediction
        y = y[:, :, -1]
    torch.testing.assert_close(y, full, rtol=1e-10, atol=1e-10)


def test_streaming_keeps_no_autograd_graph(name):
    # inference only: a graph held by the outputs or the state would grow with every call
    model = build(name)
    for m in (model, torchtcn.SequenceModel(model, head="per_step", out_features=2).double()):
        state = m.init_state(2)
        x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
        y, state = m.step(x, state)
        tail, state = m.flush(state)
        assert not y.requires_grad and not tail.requires_grad
        held = [v for v in vars(state).values() if isinstance(v, torch.Tensor)]
        assert held and not any(t.requires_grad for t in held)


def test_bad_input_rejected(name):
    model = build(name)
    with pytest.raises(ValueError, match="channels"):
        model(torch.randn(2, 4, 9, dtype=torch.float64))
    with pytest.raises(TypeError, match="floating"):
        model(torch.ones(2, 3, 9, dtype=torch.int64))


@pytest.mark.parametrize("layout", ["NCL", "NLC"])
@pytest.mark.parametrize("head", ["last_step", "per_step", "mean"])
def test_variable_length_batch_equals_each_sequence_alone(name, head, layout):
    """A right-padded batch with ``lengths``: every sequence's output is the one it gets alone."""
    model = torchtcn.SequenceModel(build(name, layout), head=head, out_features=2).double().eval()
    lengths = [13, 1, 7]
    seqs = [torch.randn(1, 3, n, dtype=torch.float64) for n in lengths]
    batch = torch.full((3, 3, 13), 1e3, dtype=torch.float64)  # loud padding: a leak would show
    for i, s in enumerate(seqs):
        batch[i, :, : lengths[i]] = s[0]

    def nlc(x):
        return x.transpose(1, 2) if layout == "NLC" else x

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torchtcn.ReceptiveFieldWarning)
        out = model(nlc(batch), lengths=torch.tensor(lengths))
        alone = [model(nlc(s)) for s in seqs]
    for i, n in enumerate(lengths):
        if head != "per_step":
            torch.testing.assert_close(out[i], alone[i][0], rtol=1e-12, atol=1e-12)
        else:
            torch.testing.assert_close(out[i, :, :n], alone[i][0], rtol=1e-12, atol=1e-12)
            assert torch.equal(out[i, :, n:], torch.zeros_like(out[i, :, n:]))
