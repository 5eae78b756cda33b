"""Export (``torchtcn.export``, ``torchtcn export``): ONNX and TorchScript match eager."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import torchtcn
from torchtcn import TCN, LanguageModel, SequenceModel
from torchtcn.cli import main
from torchtcn.export import (
    StepModule,
    export_onnx,
    export_step_onnx,
    export_step_program,
    export_step_torchscript,
    export_torchscript,
    initial_step_state,
    step_module,
)

ort = pytest.importorskip("onnxruntime")

CONFIGS = [
    dict(in_channels=1, channels=[25] * 4, kernel_size=7),
    dict(in_channels=2, channels=[6, 8, 5], kernel_size=3, norm="batch", gate="glu",
         skip_connections=True, dilations=[1, 3, 2]),
    dict(in_channels=3, channels=[6, 6], kernel_size=4, norm="layer", gate="wavenet",
         layout="NLC", causal=False, skip_connections=True),
]


def make(cfg) -> TCN:
    model = TCN(**cfg).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model


def frame(model, n: int, t: int = 1) -> torch.Tensor:
    shape = (n, model.in_channels, t) if model.layout == "NCL" else (n, t, model.in_channels)
    return torch.randn(shape)


@pytest.mark.parametrize("cfg", CONFIGS)
def test_onnx_step_matches_eager_step_over_many_steps(cfg, tmp_path):
    model = make(cfg)
    path = export_step_onnx(model, tmp_path / "step.onnx", batch_size=3)
    sess = ort.InferenceSession(str(path))
    names = [i.name for i in sess.get_inputs()]
    carried = [t.numpy() for t in initial_step_state(model, 3)]
    state = model.init_state(3)
    for _ in range(120):  # beyond every ring's length: wrap-around is exercised
        x = frame(model, 3)
        y, state = model.step(x, state)
        y_onnx, *carried = sess.run(None, dict(zip(names, [x.numpy(), *carried])))
        np.testing.assert_allclose(y_onnx, y.numpy(), rtol=0, atol=1e-5)


def test_a_non_causal_step_flushes_through_its_end_input(tmp_path):
    """Setting ``end`` to a stream's age, then feeding stream_delay frames of anything, gives
    the forward pass's last frames (zero padding at every layer), as the eager flush does."""
    model = make(CONFIGS[2])
    delay, t_dim = model.stream_delay, 1  # NLC
    x = frame(model, 2, 9)
    steps = {"onnx": export_step_onnx(model, tmp_path / "s.onnx", batch_size=2),
             "ts": torch.jit.load(str(export_step_torchscript(model, tmp_path / "s.pt", batch_size=2))),
             "ep": torch.export.load(str(export_step_program(model, tmp_path / "s.pt2"))).module()}
    sess = ort.InferenceSession(str(steps.pop("onnx")))
    names = [i.name for i in sess.get_inputs()]
    assert names == ["x", "state", "age", "end"]
    steps["onnx"] = lambda *a: [torch.from_numpy(v) for v in
                                sess.run(None, dict(zip(names, [v.numpy() for v in a])))]
    for key, step in steps.items():
        carried = list(initial_step_state(model, 2))
        outs = []
        for i in range(9):
            y, *carried = step(x.narrow(t_dim, i, 1), *carried)
            outs.append(y)
        carried[2] = carried[1].clone()  # end := age: both streams end here
        for _ in range(delay):
            y, *carried = step(torch.full_like(x.narrow(t_dim, 0, 1), 7.0), *carried)
            outs.append(y)
        got = torch.cat(outs, t_dim).narrow(t_dim, delay, 9)
        torch.testing.assert_close(got, model(x).detach(), rtol=0, atol=1e-5, msg=key)


def test_onnx_step_takes_any_batch_and_chunk_length(tmp_path):
    model = make(CONFIGS[0])
    sess = ort.InferenceSession(str(export_step_onnx(model, tmp_path / "s.onnx")))
    x = frame(model, 5, 7)
    (state0,) = initial_step_state(model, 5)
    y, new_state = sess.run(None, {"x": x.numpy(), "state": state0.numpy()})
    np.testing.assert_allclose(y, model(x).detach().numpy(), rtol=0, atol=1e-5)
    assert new_state.shape == tuple(state0.shape)


@pytest.mark.parametrize("cfg", CONFIGS)
def test_onnx_full_model_matches_forward(cfg, tmp_path):
    model = make(cfg)
    sess = ort.InferenceSession(str(export_onnx(model, tmp_path / "m.onnx")))
    for n, t in [(1, 5), (4, 37)]:
        x = frame(model, n, t)
        (y,) = sess.run(None, {"x": x.numpy()})
        np.testing.assert_allclose(y, model(x).detach().numpy(), rtol=0, atol=1e-5)


def test_onnx_heads(tmp_path):
    body = TCN(4, [6, 4], kernel_size=3)
    lm = LanguageModel(body, vocab_size=9).eval()
    sess = ort.InferenceSession(str(export_onnx(lm, tmp_path / "lm.onnx")))
    tokens = torch.randint(0, 9, (2, 11))
    np.testing.assert_allclose(
        sess.run(None, {"x": tokens.numpy()})[0], lm(tokens).detach().numpy(), atol=1e-5
    )
    for head in ("last_step", "mean"):
        clf = SequenceModel(TCN(1, [5, 5]), head=head, out_features=3).eval()
        sess = ort.InferenceSession(str(export_onnx(clf, tmp_path / f"clf-{head}.onnx")))
        x = torch.randn(3, 1, 20)
        np.testing.assert_allclose(sess.run(None, {"x": x.numpy()})[0], clf(x).detach().numpy(),
                                   atol=1e-5)


def test_torchscript_full_model_takes_cond_and_restores_the_mode(tmp_path):
    model = TCN(2, [6, 6], kernel_size=3, cond_channels=3, dropout=0.5).train()
    traced = torch.jit.load(str(export_torchscript(model, tmp_path / "c.pt")))
    assert model.training
    x, cond = torch.randn(3, 2, 20), torch.randn(3, 3)
    with torch.no_grad():
        torch.testing.assert_close(traced(x, cond), model.eval()(x, cond=cond), rtol=0, atol=1e-6)


@pytest.mark.parametrize("cfg", CONFIGS)
def test_torchscript_step_matches_eager_step(cfg, tmp_path):
    model = make(cfg)
    step = torch.jit.load(str(export_step_torchscript(model, tmp_path / "step.pt", batch_size=2)))
    carried = list(initial_step_state(model, 2))
    state = model.init_state(2)
    for _ in range(60):
        x = frame(model, 2)
        y, state = model.step(x, state)
        y_ts, *carried = step(x, *carried)
        torch.testing.assert_close(y_ts, y, rtol=0, atol=1e-5)


@pytest.mark.parametrize("cfg", CONFIGS[1:])
def test_torch_export_step_matches_eager_step(cfg, tmp_path):
    model = make(cfg)
    program = torch.export.load(str(export_step_program(model, tmp_path / "step.pt2")))
    step = program.module()
    carried = list(initial_step_state(model, 3))  # batch is dynamic: exported at 2, run at 3
    state = model.init_state(3)
    for _ in range(40):
        x = frame(model, 3)
        y, state = model.step(x, state)
        y_ep, *carried = step(x, *carried)
        torch.testing.assert_close(y_ep, y, rtol=0, atol=1e-5)


def test_torch_export_step_from_a_batch_of_one(tmp_path):
    # torch.export turns a size-1 dimension into a constant: the example is widened to 2
    model = make(CONFIGS[1])
    step = torch.export.load(str(export_step_program(model, tmp_path / "s.pt2", 1))).module()
    for n in (1, 4):
        x, state = frame(model, n), model.init_state(n)
        y_ep, *_ = step(x, *initial_step_state(model, n))
        torch.testing.assert_close(y_ep, model.step(x, state)[0], rtol=0, atol=1e-5)


def test_export_arguments_are_checked(tmp_path):
    model = make(CONFIGS[1])
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        export_step_onnx(model, tmp_path / "s.onnx", batch_size=0)
    with pytest.raises(TypeError, match="chunk must be an int"):
        export_step_program(model, tmp_path / "s.pt2", chunk=2.5)
    with pytest.raises(ValueError, match=r"opset must be in 7\.\.\d+ .*got 3"):
        export_onnx(model, tmp_path / "m.onnx", opset=3)
    with pytest.raises(TypeError, match="torchtcn model .* got Linear"):
        export_onnx(torch.nn.Linear(2, 3), tmp_path / "m.onnx")
    assert not list(tmp_path.iterdir())


def test_step_module_in_float64_is_exact():
    model = make(CONFIGS[2]).double()
    step = StepModule(model)
    carried = list(initial_step_state(model, 2))
    x = frame(model, 2, 9).double()
    outs = []
    for i in range(9):
        y, *carried = step(x[:, i : i + 1], *carried)
        outs.append(y)
    got = torch.cat(outs, 1)[:, model.stream_delay :]
    torch.testing.assert_close(got, model(x)[:, : 9 - model.stream_delay], rtol=0, atol=1e-12)


WRAPPED = {
    "per_step": lambda: SequenceModel(TCN(2, [6, 5], kernel_size=3, norm="layer"), "per_step", 3),
    "last_step NLC non-causal": lambda: SequenceModel(
        TCN(2, [6, 6], kernel_size=4, layout="NLC", causal=False), "last_step", 4),
    "language model": lambda: LanguageModel(TCN(8, [12, 8], kernel_size=3), vocab_size=30),
    "lstm": lambda: torchtcn.LSTM(2, 6, num_layers=2),
    "gru per_step NLC": lambda: SequenceModel(torchtcn.GRU(2, 5, layout="NLC"), "per_step", 3),
    "rnn last_step": lambda: SequenceModel(torchtcn.RNN(2, 7), "last_step", 2),
    "lstm language model": lambda: LanguageModel(torchtcn.LSTM(6, 6), vocab_size=30),
}


def wrapped_input(model, n: int, t: int) -> torch.Tensor:
    if isinstance(model, LanguageModel):
        return torch.randint(0, 30, (n, t))
    return frame(getattr(model, "body", model), n, t)


FULL_MODELS = {
    **{f"tcn{i}": (lambda cfg=cfg: make(cfg)) for i, cfg in enumerate(CONFIGS)},
    **WRAPPED,
    "mean": lambda: SequenceModel(TCN(1, [5, 5]), head="mean", out_features=3),
}


@pytest.mark.parametrize("kind", FULL_MODELS)
def test_torchscript_full_model_matches_forward_at_any_batch_and_length(kind, tmp_path):
    model = FULL_MODELS[kind]().eval()
    traced = torch.jit.load(str(export_torchscript(model, tmp_path / "m.pt")))
    for n, t in [(1, 1), (3, 5), (2, 16), (4, 57)]:
        x = wrapped_input(model, n, t)
        with torch.no_grad():
            torch.testing.assert_close(traced(x), model(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", WRAPPED)
def test_the_step_of_heads_language_models_and_recurrent_bodies_exports(kind, tmp_path):
    """ONNX, TorchScript and torch.export steps equal the model's own ``step``."""
    model = WRAPPED[kind]().eval()
    sess = ort.InferenceSession(str(export_step_onnx(model, tmp_path / "s.onnx", batch_size=2)))
    names = [i.name for i in sess.get_inputs()]
    scripted = torch.jit.load(str(export_step_torchscript(model, tmp_path / "s.pt", batch_size=2)))
    program = torch.export.load(str(export_step_program(model, tmp_path / "s.pt2"))).module()
    carried = {k: list(initial_step_state(model, 2)) for k in ("onnx", "ts", "ep")}
    state = model.init_state(2)
    for _ in range(30):
        x = wrapped_input(model, 2, 1)
        with torch.no_grad():
            y, state = model.step(x, state)
        y_onnx, *carried["onnx"] = sess.run(None, dict(zip(names, [x.numpy(), *(c.numpy() for c in carried["onnx"])])))
        carried["onnx"] = [torch.from_numpy(c) for c in carried["onnx"]]
        y_ts, *carried["ts"] = scripted(x, *carried["ts"])
        y_ep, *carried["ep"] = program(x, *carried["ep"])
        np.testing.assert_allclose(y_onnx, y.numpy(), rtol=0, atol=1e-5)
        torch.testing.assert_close(y_ts, y, rtol=0, atol=1e-5)
        torch.testing.assert_close(y_ep, y, rtol=0, atol=1e-5)
    if model.stream_delay == 0:  # the ONNX step's chunk length is dynamic when causal
        x = wrapped_input(model, 2, 4)
        with torch.no_grad():
            y, state = model.step(x, state)
        y_onnx, *_ = sess.run(None, dict(zip(names, [x.numpy(), *(c.numpy() for c in carried["onnx"])])))
        np.testing.assert_allclose(y_onnx, y.numpy(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", WRAPPED)
def test_wrapped_step_module_in_float64_equals_the_full_forward(kind):
    model = WRAPPED[kind]().double().eval()
    step = step_module(model)
    carried = list(initial_step_state(model, 2))
    x = wrapped_input(model, 2, 11)
    x = x if x.dtype == torch.long else x.double()
    t_axis = step.x_time_axis
    outs = []
    for i in range(11):
        y, *carried = step(x.narrow(t_axis, i, 1), *carried)
        outs.append(y)
    got = torch.cat(outs, step.y_time_axis)
    delay = getattr(model, "stream_delay", 0)
    if isinstance(model, SequenceModel) and model.config.head == "last_step":
        # each frame is the head on the body's output there (the prediction for the
        # sequence ending there, once the lagging body has seen its lookahead)
        h = model.body(x)
        h = h if model.body.layout == "NLC" else h.transpose(1, 2)
        want = model.head.linear(h).transpose(1, 2)
        if delay == 0:  # and the last frame is the model's prediction for the whole sequence
            torch.testing.assert_close(got[:, :, -1], model(x), rtol=0, atol=1e-12)
    else:
        want = model(x)
    if step.y_time_axis == 1:  # a bare NLC body
        got, want = got.transpose(1, 2), want.transpose(1, 2)
    torch.testing.assert_close(got[:, :, delay:], want[:, :, : 11 - delay], rtol=0, atol=1e-12)


def test_step_export_refuses_what_it_cannot_stream(tmp_path):
    mean = SequenceModel(TCN(1, [5]), head="mean").eval()
    with pytest.raises(TypeError, match="head='mean'"):
        export_step_onnx(mean, tmp_path / "x.onnx")
    with pytest.raises(TypeError, match="got Linear"):
        step_module(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="use step_module"):
        StepModule(torchtcn.LSTM(1, 4))
    assert not (tmp_path / "x.onnx").exists()
    with pytest.raises(TypeError, match="export takes a torchtcn model .* got str"):
        export_torchscript("model", tmp_path / "x.pt")
    step = step_module(TCN(1, [5, 4], kernel_size=3).eval())
    with pytest.raises(ValueError, match=r"state must be \(N, 5, 12\) .* got shape \(2, 9, 19\)"):
        step(torch.randn(2, 1, 1), torch.zeros(2, 9, 19))


def test_a_step_module_moves_and_casts_its_folded_weights():
    model = TCN(2, [6, 5], kernel_size=3, norm="batch").eval()
    step = step_module(model).double()  # the folded convolutions followed (they are no buffers)
    carried = list(initial_step_state(model.double(), 2))
    assert carried[0].dtype == torch.float64
    x = torch.randn(2, 2, 9, dtype=torch.float64)
    outs = []
    for i in range(9):
        y, *carried = step(x[:, :, i : i + 1], *carried)
        outs.append(y)
    torch.testing.assert_close(torch.cat(outs, 2), model(x), rtol=0, atol=1e-12)


def test_export_leaves_the_global_rng_and_the_models_warning_alone(tmp_path):
    model = SequenceModel(TCN(1, [4], kernel_size=2), "last_step", 2)  # receptive field 3
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    export_torchscript(model, tmp_path / "m.pt")
    export_onnx(model, tmp_path / "m.onnx")
    torch.testing.assert_close(torch.rand(3), expected, rtol=0, atol=0)
    with pytest.warns(torchtcn.ReceptiveFieldWarning):  # the trace's 16 frames did not use it up
        model(torch.randn(2, 1, 50))


def test_an_exported_step_is_a_snapshot_of_the_weights_and_leaves_the_model_mode_alone():
    model = LanguageModel(torchtcn.LSTM(6, 6, num_layers=2, dropout=0.5), vocab_size=30).train()
    step = step_module(model)
    assert model.training and model.body.rnn.training  # untouched
    assert step.embedding.weight is step.output.weight  # still tied, in one copy
    x = torch.randint(0, 30, (2, 3))
    before = step(x, *initial_step_state(model, 2))[0]
    with torch.no_grad():
        model.embedding.weight.add_(1.0)
    torch.testing.assert_close(step(x, *initial_step_state(model, 2))[0], before, rtol=0, atol=0)


def test_cli_export(tmp_path, capsys):
    model = make(CONFIGS[0])
    torchtcn.save(model, tmp_path / "m.safetensors")
    out = tmp_path / "out"
    assert main(["export", str(tmp_path / "m.safetensors"), str(out), "--what", "model,step"]) == 0
    assert (out / "model.onnx").exists() and (out / "step.onnx").exists()
    assert not (out / "step.pt").exists() and not (out / "step.pt2").exists()
    assert "step.onnx" in capsys.readouterr().out
    assert main(["export", str(tmp_path / "m.safetensors"), str(out), "--what", "bogus"]) == 2


def test_cli_export_writes_every_artefact_that_applies(tmp_path, capsys):
    """A model trained by `torchtcn train` is a SequenceModel: its step exports by default,
    an LSTM's too; a mean head's model exports alone (with a note), and asking for its step
    writes nothing."""
    everything = ["model.onnx", "model.pt", "step.onnx", "step.pt", "step.pt2"]
    for name, model in [("clf", WRAPPED["per_step"]()), ("lstm", WRAPPED["rnn last_step"]())]:
        torchtcn.save(model.eval(), tmp_path / f"{name}.safetensors")
        assert main(["export", str(tmp_path / f"{name}.safetensors"), str(tmp_path / name)]) == 0
        assert sorted(p.name for p in (tmp_path / name).iterdir()) == everything
    mean = SequenceModel(TCN(1, [4]), "mean")
    torchtcn.save(mean, tmp_path / "mean.safetensors")
    capsys.readouterr()
    assert main(["export", str(tmp_path / "mean.safetensors"), str(tmp_path / "mean")]) == 0
    assert "note: exporting the full model only" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "mean").iterdir()) == ["model.onnx", "model.pt"]
    assert main(["export", str(tmp_path / "mean.safetensors"), str(tmp_path / "mean2"),
                 "--what", "model,step"]) == 2
    assert "use --what model,model_torchscript" in capsys.readouterr().err
    assert not (tmp_path / "mean2").exists()


def test_onnx_of_a_conditioned_float32_model_under_a_float64_default_dtype(tmp_path):
    # FiLM's torch.addcmul exported its value=1 constant in the default dtype: float64 then
    # spread into the float32 graph's convs, which onnxruntime has no kernel for
    model = TCN(4, [3, 2], kernel_size=2, cond_channels=2).eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.3)  # FiLM starts at the identity: make it matter
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        path = export_onnx(model, tmp_path / "c.onnx")
    finally:
        torch.set_default_dtype(old)
    sess = ort.InferenceSession(str(path))
    x, cond = torch.randn(2, 4, 9), torch.randn(2, 2)
    feeds = {i.name: v.numpy() for i, v in zip(sess.get_inputs(), (x, cond))}
    np.testing.assert_allclose(sess.run(None, feeds)[0], model(x, cond=cond).detach().numpy(),
                               atol=1e-5)
