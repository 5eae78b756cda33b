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
    initial_step_state,
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


def test_step_export_needs_a_tcn(tmp_path):
    clf = SequenceModel(TCN(1, [5]), head="per_step").eval()
    with pytest.raises(TypeError, match="TCN"):
        export_step_onnx(clf, tmp_path / "x.onnx")


def test_cli_export(tmp_path, capsys):
    model = make(CONFIGS[0])
    torchtcn.save(model, tmp_path / "m.safetensors")
    out = tmp_path / "out"
    assert main(["export", str(tmp_path / "m.safetensors"), str(out), "--what", "model,step"]) == 0
    assert (out / "model.onnx").exists() and (out / "step.onnx").exists()
    assert not (out / "step.pt").exists() and not (out / "step.pt2").exists()
    assert "step.onnx" in capsys.readouterr().out
    assert main(["export", str(tmp_path / "m.safetensors"), str(out), "--what", "bogus"]) == 2
