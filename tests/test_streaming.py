"""Streaming inference (``torchtcn.streaming``): streamed outputs equal the full forward pass."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

import torchtcn
from torchtcn import TCN, LanguageModel, SequenceModel
from torchtcn.streaming import TCNState


def randomize_norm_stats(model: nn.Module) -> nn.Module:
    """Non-trivial running statistics and affine terms, so folded norms are really tested."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.3, 0.3)
        if isinstance(m, nn.LayerNorm):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.3, 0.3)
    return model


def random_config(seed: int) -> dict:
    rng = random.Random(seed)
    blocks = rng.randint(1, 4)
    k = rng.randint(1, 7)
    cfg = dict(
        in_channels=rng.randint(1, 4),
        channels=[rng.randint(2, 6) for _ in range(blocks)],
        kernel_size=k,
        norm=rng.choice(["weight", "batch", "layer", None]),
        causal=rng.random() < 0.6,
        layout=rng.choice(["NCL", "NLC"]),
        gate=rng.choice([None, None, "glu", "wavenet"]),
        skip_connections=rng.random() < 0.4,
        activation=rng.choice(["relu", "tanh", "gelu", "elu", "leaky_relu", "identity"]),
        residual_activation=rng.random() < 0.7,
        dropout=rng.choice([0.0, 0.2]),  # eval mode: must not matter
        init_std=None,
    )
    if rng.random() < 0.5:
        cfg["dilations"] = [rng.randint(1, 5) for _ in range(blocks)]
    return cfg


def make(seed: int = 0, dtype=torch.float64, **cfg) -> TCN:
    torch.manual_seed(seed)
    return randomize_norm_stats(TCN(**cfg)).to(dtype).eval()


def time_dim(layout: str) -> int:
    return 2 if layout == "NCL" else 1


def inputs(model, n: int, t: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, model.in_channels, t, generator=g, dtype=dtype)
    return x if model.layout == "NCL" else x.transpose(1, 2).contiguous()


def chunk_sizes(kind: str, t: int, seed: int = 0) -> list[int]:
    if kind == "one":
        return [1] * t
    if kind == "whole":
        return [t]
    rng, out = random.Random(seed), []
    while sum(out) < t:
        out.append(min(rng.randint(1, 9), t - sum(out)))
    return out


def stream(model, x: torch.Tensor, sizes: list[int], state=None, flush=True) -> torch.Tensor:
    """Stream ``x`` in chunks, flush, and drop the first ``stream_delay`` frames: the result
    should equal ``model(x)``."""
    dim = time_dim(getattr(model, "layout", "NCL"))
    state = model.init_state(batch_size=x.shape[0]) if state is None else state
    outs, start = [], 0
    for size in sizes:
        y, state = model.step(x.narrow(dim, start, size), state)
        outs.append(y)
        start += size
    if flush:
        y, state = model.flush(state)
        outs.append(y)
    return torch.cat(outs, dim).narrow(dim, model.stream_delay, x.shape[dim])


@pytest.mark.parametrize("chunking", ["one", "random", "whole"])
@pytest.mark.parametrize("seed", range(16))
def test_random_configs_stream_exactly(seed, chunking):
    cfg = random_config(seed)
    model = make(seed, **cfg)
    n = 1 + seed % 3
    x = inputs(model, n, 23, seed)
    with torch.no_grad():
        full = model(x)
    got = stream(model, x, chunk_sizes(chunking, 23, seed))
    assert got.shape == full.shape
    torch.testing.assert_close(got, full, rtol=0, atol=1e-10, msg=str(cfg))


@pytest.mark.parametrize("norm", ["weight", "batch", "layer", None])
@pytest.mark.parametrize("gate", [None, "glu", "wavenet"])
@pytest.mark.parametrize("causal", [True, False])
def test_every_norm_gate_and_causality(norm, gate, causal):
    model = make(
        1, in_channels=2, channels=[4, 3, 3], kernel_size=3, norm=norm, gate=gate,
        causal=causal, skip_connections=True, dilations=[1, 3, 2], activation="tanh",
    )
    x = inputs(model, 2, 30, 1)
    full = model(x)
    for kind in ("one", "random"):
        torch.testing.assert_close(stream(model, x, chunk_sizes(kind, 30)), full, rtol=0, atol=1e-10)


def test_stream_delay_is_lookahead_and_outputs_before_it_are_zero():
    model = make(2, in_channels=1, channels=[3, 3], kernel_size=4, causal=False)
    assert model.stream_delay == model.lookahead > 0
    state = model.init_state(2)
    y, state = model.step(inputs(model, 2, model.stream_delay, 2), state)
    assert torch.count_nonzero(y) == 0
    causal = make(2, in_channels=1, channels=[3, 3], kernel_size=4)
    assert causal.stream_delay == 0
    y, _ = causal.flush(causal.init_state(2))
    assert y.shape == (2, 3, 0)


def test_flush_of_a_stream_shorter_than_the_delay():
    model = make(3, in_channels=2, channels=[3, 4], kernel_size=5, causal=False, layout="NLC")
    x = inputs(model, 1, 3, 3)
    assert 3 < model.stream_delay
    torch.testing.assert_close(stream(model, x, [2, 1]), model(x), rtol=0, atol=1e-10)


def test_flush_resets_for_the_next_stream():
    model = make(4, in_channels=1, channels=[3, 3], kernel_size=3, causal=False)
    state = model.init_state(1)
    stream(model, inputs(model, 1, 11, 4), [4, 7], state)
    x = inputs(model, 1, 9, 5)
    torch.testing.assert_close(stream(model, x, [9], state), model(x), rtol=0, atol=1e-10)


@pytest.mark.parametrize("causal", [True, False])
def test_mean_head_flush_restarts_the_running_mean(causal):
    body = make(6, in_channels=2, channels=[3, 3], kernel_size=3, causal=causal)
    model = torchtcn.SequenceModel(body, head="mean", out_features=2).double().eval()
    state = model.init_state(1)
    _, state = model.step(inputs(body, 1, 10, 6), state)
    _, state = model.flush(state)
    x = inputs(body, 1, 8, 7)
    y, state = model.step(x, state)
    tail, _ = model.flush(state)
    last = torch.cat([y, tail], 2)[:, :, -1]  # the mean over the second sequence alone
    torch.testing.assert_close(last, model(x), rtol=0, atol=1e-10)


def test_float32_paper_model():
    model = TCN(1, [25] * 8, kernel_size=7).eval()
    x = torch.randn(2, 1, 400)
    full = model(x)
    for kind in ("one", "random"):
        got = stream(model, x, chunk_sizes(kind, 400), flush=False)
        torch.testing.assert_close(got, full, rtol=0, atol=1e-5)


def test_long_stream_does_not_drift():
    """20,000 single-frame steps (the ring wraps hundreds of times): the last output equals
    the full forward pass over the last receptive-field window."""
    model = make(5, in_channels=2, channels=[6, 6, 6], kernel_size=3, norm="batch")
    steps, rf = 20_000, model.receptive_field
    x = inputs(model, 2, steps, 5)
    state = model.init_state(2)
    with torch.no_grad():
        for i in range(steps):
            y, state = model.step(x[:, :, i : i + 1], state)
    window = model(x[:, :, steps - rf :])
    torch.testing.assert_close(y[:, :, 0], window[:, :, -1], rtol=0, atol=1e-12)


def test_long_chunked_stream_of_the_paper_model_does_not_drift():
    model = TCN(1, [25] * 8, kernel_size=7).double().eval()
    steps, rf = 20_000, model.receptive_field
    x = torch.randn(1, 1, steps, dtype=torch.float64)
    state = model.init_state(1)
    for i in range(0, steps, 500):
        y, state = model.step(x[:, :, i : i + 500], state)
    window = model(x[:, :, steps - rf :])
    torch.testing.assert_close(y[:, :, -1], window[:, :, -1], rtol=0, atol=1e-12)


@pytest.mark.parametrize("causal", [True, False])
def test_reset_restarts_streams_as_new(causal):
    model = make(6, in_channels=2, channels=[4, 4], kernel_size=3, causal=causal, norm="layer")
    delay = model.stream_delay
    x1, x2 = inputs(model, 3, 12, 6), inputs(model, 3, 10, 7)
    state = model.init_state(3)
    for i in range(12):
        _, state = model.step(x1[:, :, i : i + 1], state)
    state.reset([1])
    state.reset(torch.tensor([False, False, True]))
    y = torch.cat([model.step(x2[:, :, i : i + 1], state)[0] for i in range(10)], 2)
    fresh = model(x2)  # streams 1, 2 restarted: as if x2 were all they ever saw
    torch.testing.assert_close(y[1:, :, delay:], fresh[1:, :, : 10 - delay], rtol=0, atol=1e-10)
    continued = model(torch.cat([x1, x2], 2))[:1, :, 12 - delay : 22 - delay]
    torch.testing.assert_close(y[:1], continued, rtol=0, atol=1e-10)


@pytest.mark.parametrize("causal", [True, False])
def test_select_reorders_duplicates_and_drops(causal):
    model = make(7, in_channels=2, channels=[4, 4], kernel_size=3, causal=causal, skip_connections=True)
    delay = model.stream_delay
    x1 = inputs(model, 3, 9, 8)
    state = model.init_state(3)
    _, state = model.step(x1, state)
    order = [2, 0, 0]
    picked = state.select(order)
    assert picked.batch_size == 3 and state.batch_size == 3
    x2 = inputs(model, 3, 6, 9)
    y = torch.cat([model.step(x2[:, :, i : i + 1], picked)[0] for i in range(6)], 2)
    history = torch.cat([x1[order], x2], 2)
    torch.testing.assert_close(y, model(history)[:, :, 9 - delay : 15 - delay], rtol=0, atol=1e-10)
    # the original state is untouched by stepping the selection
    y0, _ = model.step(x2[:1, :, :1].expand(3, -1, -1).contiguous(), state.select([0, 1, 2]))
    assert y0.shape == (3, 4, 1)


def test_select_with_a_bool_mask_and_clone():
    model = make(8, in_channels=1, channels=[3], kernel_size=2)
    state = model.init_state(4)
    _, state = model.step(inputs(model, 4, 5, 8), state)
    assert state.select(torch.tensor([True, False, True, False])).batch_size == 2
    copy = state.clone()
    model.step(inputs(model, 4, 2, 9), state)
    assert copy.t == 5 and state.t == 7


def test_state_is_caller_owned_not_in_state_dict():
    model = make(9, in_channels=1, channels=[3, 3], kernel_size=3)
    keys = list(model.state_dict())
    state = model.init_state(2)
    model.step(inputs(model, 2, 4, 9), state)
    assert list(model.state_dict()) == keys
    assert isinstance(state, TCNState) and state.batch_size == 2
    assert state.to("cpu").buf.device.type == "cpu"


def test_weights_changed_after_init_state_are_picked_up():
    model = make(10, in_channels=1, channels=[3, 3], kernel_size=3)
    state = model.init_state(1)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.5)
    x = inputs(model, 1, 6, 10)
    torch.testing.assert_close(stream(model, x, [1] * 6, state), model(x), rtol=0, atol=1e-10)


def test_weights_given_new_storage_after_init_state_are_picked_up():
    # vector_to_parameters assigns p.data: no version bump, but new storage
    from torch.nn.utils import parameters_to_vector, vector_to_parameters
    model = make(10, in_channels=1, channels=[3, 3], kernel_size=3)
    state = model.init_state(1)
    vector_to_parameters(parameters_to_vector(model.parameters()) * 1.5, model.parameters())
    x = inputs(model, 1, 6, 10)
    torch.testing.assert_close(stream(model, x, [1] * 6, state), model(x), rtol=0, atol=1e-10)


def test_a_state_stepped_in_and_out_of_inference_mode():
    model = make(11, in_channels=1, channels=[3, 3], kernel_size=3)
    x = inputs(model, 2, 6, 11)
    state = model.init_state(2)
    with torch.inference_mode():
        # single frames: the fast path makes its work tensors here, as inference tensors
        first = stream(model, x[:, :, :3], [1, 1, 1], state, flush=False)
    rest = stream(model, x[:, :, 3:], [1, 1, 1], state)
    torch.testing.assert_close(torch.cat([first, rest], 2), model(x), rtol=0, atol=1e-10)
    with torch.inference_mode():
        made_inside = model.init_state(2)
    with pytest.raises(ValueError, match="inference_mode"):
        model.step(x[:, :, :1], made_inside)


def test_input_requiring_grad_streams_without_a_graph():
    model = make(11, in_channels=1, channels=[3], kernel_size=3)
    x = inputs(model, 1, 4, 11).requires_grad_()
    y, _ = model.step(x, model.init_state(1))
    assert not y.requires_grad


# -- heads ---------------------------------------------------------------------------------
@pytest.mark.parametrize("causal", [True, False])
def test_sequence_model_per_step_head(causal):
    body = make(12, in_channels=2, channels=[4, 4], kernel_size=3, causal=causal, layout="NLC")
    model = SequenceModel(body, head="per_step", out_features=3).double().eval()
    assert model.stream_delay == body.stream_delay
    x = inputs(body, 2, 15, 12)
    full = model(x)
    state = model.init_state(2)
    outs = [model.step(x[:, i : i + 4], state)[0] for i in range(0, 15, 4)]
    outs.append(model.flush(state)[0])
    got = torch.cat(outs, 2)[:, :, model.stream_delay :]
    torch.testing.assert_close(got, full, rtol=0, atol=1e-10)


def test_sequence_model_last_step_head_predicts_at_every_frame():
    body = make(13, in_channels=1, channels=[4, 4], kernel_size=3)
    model = SequenceModel(body, head="last_step", out_features=5).double().eval()
    x = inputs(body, 2, 10, 13)
    y, _ = model.step(x, model.init_state(2))
    assert y.shape == (2, 5, 10)
    torch.testing.assert_close(y[:, :, -1], model(x), rtol=0, atol=1e-10)
    torch.testing.assert_close(y[:, :, 3], model(x[:, :, :4]), rtol=0, atol=1e-10)


@pytest.mark.parametrize("causal", [True, False])
def test_sequence_model_mean_head_streams_the_running_mean(causal):
    body = make(16, in_channels=2, channels=[4, 4], kernel_size=3, causal=causal)
    model = SequenceModel(body, head="mean", out_features=3).double().eval()
    x = inputs(body, 3, 14, 16)
    state = model.init_state(3)
    outs = [model.step(x[:, :, i : i + 5], state)[0] for i in range(0, 14, 5)]
    outs.append(model.flush(state)[0])
    got = torch.cat(outs, 2)[:, :, model.stream_delay :]
    assert got.shape == (3, 3, 14)
    h = body(x)
    for t in range(14):  # each frame: the head on the mean of the body's outputs so far
        expected = model.head.linear(h[:, :, : t + 1].mean(2))
        torch.testing.assert_close(got[:, :, t], expected, rtol=0, atol=1e-10)
        if causal:  # which is the prediction for the sequence ending there
            torch.testing.assert_close(got[:, :, t], model(x[:, :, : t + 1]), rtol=0, atol=1e-10)
    torch.testing.assert_close(got[:, :, -1], model(x), rtol=0, atol=1e-10)


def test_mean_head_state_resets_and_selects_streams():
    body = torchtcn.create_model("lstm", in_channels=2, hidden_size=5).double().eval()
    model = SequenceModel(body, head="mean", out_features=2).double().eval()
    x = torch.randn(3, 2, 9, dtype=torch.float64)
    state = model.init_state(3)
    model.step(x[:, :, :4], state)
    state.reset([1])  # stream 1 starts over: from here it is a new sequence
    y, state = model.step(x[:, :, 4:], state)
    torch.testing.assert_close(y[1, :, -1], model(x[1:2, :, 4:])[0], rtol=0, atol=1e-10)
    torch.testing.assert_close(y[0, :, -1], model(x[0:1])[0], rtol=0, atol=1e-10)
    copy = state.clone()
    model.step(x[:, :, :2], copy)  # the copy moves on alone
    assert int(copy.count[0]) == 11 and int(state.count[0]) == 9
    picked = state.select([2, 0])
    y2, _ = model.step(x[[2, 0], :, :1], picked)
    both = torch.cat([x, x[:, :, :1]], 2)[[2, 0]]
    torch.testing.assert_close(y2[:, :, -1], model(both), rtol=0, atol=1e-10)
    with pytest.raises(TypeError, match="PooledState from its init_state, got RecurrentState"):
        model.step(x, body.init_state(3))


def test_language_model_token_chunks():
    body = make(14, in_channels=6, channels=[8, 6], kernel_size=3)
    lm = LanguageModel(body, vocab_size=11).double().eval()
    tokens = torch.randint(0, 11, (3, 17))
    state = lm.init_state(3)
    got = torch.cat([lm.step(tokens[:, i : i + 5], state)[0] for i in range(0, 17, 5)], 2)
    torch.testing.assert_close(got, lm(tokens), rtol=0, atol=1e-10)


def test_sequence_model_over_a_recurrent_body_streams_too():
    body = torchtcn.create_model("gru", in_channels=2, hidden_size=5).double().eval()
    model = SequenceModel(body, head="per_step", out_features=2).double().eval()
    x = torch.randn(2, 2, 8, dtype=torch.float64)
    state = model.init_state(2)
    y1, state = model.step(x[:, :, :3], state)
    y2, state = model.step(x[:, :, 3:], state)
    torch.testing.assert_close(torch.cat([y1, y2], 2), model(x), rtol=0, atol=1e-10)


# -- bad input -----------------------------------------------------------------------------
def test_bad_input_names_expected_and_found():
    model = make(15, in_channels=2, channels=[4, 4], kernel_size=3)
    state = model.init_state(2)
    with pytest.raises(ValueError, match="expected 2, found 3"):
        model.step(inputs(model, 3, 1), state)
    with pytest.raises(ValueError, match="2 channels.*found shape"):
        model.step(torch.randn(2, 3, 1, dtype=torch.float64), state)
    with pytest.raises(ValueError, match="expected torch.float64, found torch.float32"):
        model.step(torch.randn(2, 2, 1), state)
    with pytest.raises(ValueError, match="expected cpu, found meta"):
        model.step(torch.randn(2, 2, 1, dtype=torch.float64, device="meta"), state)
    with pytest.raises(ValueError, match="found torch.float64 on meta"):
        model.step(inputs(model, 2, 1), state.to("meta"))
    other = make(15, in_channels=2, channels=[4, 5], kernel_size=3)
    with pytest.raises(ValueError, match="different architecture"):
        model.step(inputs(model, 2, 1), other.init_state(2))
    with pytest.raises(ValueError, match="3-D"):
        model.step(torch.randn(2, 2, dtype=torch.float64), state)
    with pytest.raises(TypeError, match="TCNState"):
        model.step(inputs(model, 2, 1), object())
    with pytest.raises(ValueError, match="batch_size"):
        model.init_state(0)
    for bad in ([5], [-3]):  # state of 2 streams: -2 and -1 are the last two
        with pytest.raises(ValueError, match=r"stream indices must be in \[-2, 2\)"):
            state.reset(bad)


def test_a_same_architecture_model_accepts_the_state():
    a = make(16, in_channels=1, channels=[3], kernel_size=3)
    b = make(17, in_channels=1, channels=[3], kernel_size=3, dropout=0.3)
    x = inputs(b, 1, 5, 16)
    torch.testing.assert_close(stream(b, x, [5], a.init_state(1)), b(x), rtol=0, atol=1e-10)


def test_training_mode_with_dropout_or_batch_norm_refuses_to_stream():
    model = TCN(1, [3, 3], kernel_size=3, dropout=0.1)
    with pytest.raises(RuntimeError, match="model.eval"):
        model.init_state(1)
    state = model.eval().init_state(1)
    with pytest.raises(RuntimeError, match="dropout"):
        model.train().step(torch.randn(1, 1, 1), state)
    with pytest.raises(RuntimeError, match="batch norm"):
        TCN(1, [3], norm="batch").init_state(1)
    # the recurrent baselines too (an LSTM's dropout between layers streamed random outputs)
    lstm = torchtcn.LSTM(1, hidden_size=4, num_layers=2, dropout=0.3)
    state = lstm.eval().init_state(1)
    with pytest.raises(RuntimeError, match="dropout"):
        lstm.train().step(torch.randn(1, 1, 1), state)
    one_layer = torchtcn.LSTM(1, hidden_size=4, num_layers=1)  # no dropout to apply
    one_layer.train().step(torch.randn(1, 1, 1), one_layer.init_state(1))
    # deterministic in training mode (no dropout, no batch norm): streaming is allowed
    plain = TCN(1, [3, 3], kernel_size=3)
    x = torch.randn(1, 1, 6)
    y, _ = plain.step(x, plain.init_state(1))
    torch.testing.assert_close(y, plain(x).detach(), rtol=0, atol=1e-6)


@pytest.mark.gpu
def test_cuda_stream_matches_full_pass():
    model = TCN(1, [25] * 8, kernel_size=7).cuda().eval()
    x = torch.randn(4, 1, 300, device="cuda")
    got = stream(model, x, chunk_sizes("one", 300), flush=False)
    torch.testing.assert_close(got, model(x), rtol=0, atol=1e-4)


def test_ring_positions_without_a_precomputed_table():
    """Dilations whose ring lengths have a huge lcm: indices are computed per step."""
    model = make(18, in_channels=1, channels=[2, 2, 2, 2], kernel_size=7, dilations=[7, 11, 13, 17])
    state = model.init_state(1)
    assert "gather_table" not in torchtcn.streaming.plan_for(model).fast
    x = inputs(model, 1, 400, 18)
    torch.testing.assert_close(stream(model, x, [1] * 400, state), model(x), rtol=0, atol=1e-10)


def test_bench_stream_smoke(tmp_path, capsys):
    from torchtcn.cli import main

    md, js = tmp_path / "bench.md", tmp_path / "bench.json"
    args = ["bench", "stream", "--repeats", "1", "--inner", "2", "--warmup", "0",
            "--streams", "1,3", "--markdown", str(md), "--json", str(js), "--device", "auto"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "torchtcn step" in out and "recompute window" in out
    text = md.read_text()
    assert "| 3 |" in text and "generated by `torchtcn bench stream`" in text
    import json

    record = json.loads(js.read_text())
    assert record["command"] == "torchtcn " + " ".join(args)  # as typed (was cut at argv[3:])
    # every streaming contender was checked against its own full forward before timing
    errors = record["streaming_max_abs_error"]
    assert "torchtcn step" in errors and all(0 <= e < 1e-4 for e in errors.values())
    assert "matched each contender's own full forward pass" in out


def test_bench_stream_refuses_to_time_a_step_that_is_wrong(monkeypatch, capsys):
    from torchtcn.bench import stream
    from torchtcn.cli import main

    real = stream.paper_model

    def broken(device):  # a step that streams something else than the forward pass
        model = real(device)
        step = model.step
        model.step = lambda x, state: (step(x, state)[0] + 1e-2, state)
        return model

    monkeypatch.setattr(stream, "paper_model", broken)
    # a bug, not a bad input: it keeps its traceback
    with pytest.raises(RuntimeError, match="streaming output differs from the full forward "
                                           "pass by 0.01"):
        main(["bench", "stream", "--repeats", "1", "--inner", "1", "--streams", "1"])


@pytest.mark.parametrize("bad, message", [
    (["stream", "--device", "meta"], "--device must be cpu or cuda for a benchmark, got meta"),
    (["train", "--models", "lstm", "--markdown", "{afile}/x.md"],
     "--markdown: cannot write the results to"),
    (["train", "--models", "lstm", "--sweep", "--plot", "{afile}/x.png"],
     "--plot: cannot write the results to"),
])
def test_bench_outputs_and_device_are_checked_before_the_run(bad, message, tmp_path, capsys):
    from torchtcn.cli import main

    (tmp_path / "afile").write_text("")
    assert main(["bench", *(a.format(afile=tmp_path / "afile") for a in bad)]) == 2
    assert message in capsys.readouterr().err


def test_bench_with_no_runnable_model_says_why(monkeypatch, capsys):
    from torchtcn.bench import common
    from torchtcn.cli import main

    monkeypatch.setattr(common, "available", lambda key: "not installed (test)")
    for bench in ("train", "memory"):
        assert main(["bench", bench, "--models", "pytorch-tcn"]) == 2
        assert "none of the models can run here: pytorch-tcn: not installed (test)" in \
            capsys.readouterr().err


def test_bench_models_listed_twice_run_once():
    from torchtcn.bench import common

    assert common.parse_contenders("lstm, lstm,torchtcn,lstm") == ["lstm", "torchtcn"]


@pytest.mark.parametrize("bad, message", [
    (["stream", "--streams", "-2"], "expected whole numbers >= 1 separated by commas"),
    (["stream", "--warmup", "-3"], "expected a whole number >= 0, found '-3'"),
    (["train", "--allocators", ","], "expected a comma list of glibc, live, tuned"),
    (["train", "--sweep-lengths", "abc"], "expected whole numbers >= 1"),
])
def test_bench_options_are_checked_before_anything_runs(bad, message, capsys):
    from torchtcn.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["bench", *bad])
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_bench_fp16_on_the_cpu_is_refused(capsys):
    from torchtcn.cli import main

    assert main(["bench", "train", "--device", "cpu", "--amp", "fp16", "--models", "lstm"]) == 2
    assert "--amp fp16 needs a CUDA device" in capsys.readouterr().err


@pytest.mark.parametrize("bench", ["stream", "train", "memory"])
def test_bench_json_that_cannot_be_written_is_refused_before_the_run(bench, tmp_path, capsys):
    from torchtcn.cli import main

    (tmp_path / "afile").write_text("")
    assert main(["bench", bench, "--json", str(tmp_path / "afile" / "x.json")]) == 2
    assert f"--json: cannot write the results to {tmp_path / 'afile'}" in capsys.readouterr().err
    assert main(["bench", bench, "--json", str(tmp_path)]) == 2
    assert "is a folder; give a file name" in capsys.readouterr().err


def test_model_converted_after_init_state_is_refolded():
    model = make(19, in_channels=1, channels=[3, 3], kernel_size=3, dtype=torch.float32)
    old = model.init_state(1)
    model.double()  # swaps param.data: no version bump, but the plan must not be reused
    with pytest.raises(ValueError, match="expected torch.float64"):
        model.step(torch.randn(1, 1, 1), old)
    x = inputs(model, 1, 5, 19)
    torch.testing.assert_close(stream(model, x, [1] * 5), model(x), rtol=0, atol=1e-10)


def test_a_state_outlives_settings_that_do_not_change_the_architecture():
    # None dilations are their 2**i default; init settings only shape the starting weights
    a = make(12, in_channels=1, channels=[3, 3], kernel_size=3)
    b = make(12, in_channels=1, channels=[3, 3], kernel_size=3, dilations=[1, 2],
             init_scope="downsample")
    b.load_state_dict(a.state_dict())
    x = inputs(a, 1, 5, 12)
    torch.testing.assert_close(stream(b, x, [2, 3], a.init_state(1)), a(x), rtol=0, atol=1e-10)


def test_a_model_whose_batch_norm_ddp_made_sync_still_streams():
    # torchtcn train converts batch norm to SyncBatchNorm in the trainer's model under DDP
    model = make(23, in_channels=2, channels=[4, 4], kernel_size=3, norm="batch").eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x = inputs(model, 2, 30, 23)
    want = model(x)
    synced = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model).eval()
    torch.testing.assert_close(stream(synced, x, [1, 4, 25]), want, rtol=0, atol=1e-10)
