"""Global conditioning (``cond_channels``, FiLM in every conv unit): forward, streaming,
causality, save/load, heads, generation and export all take the conditioning vector."""

from __future__ import annotations

import pytest
import torch

import torchtcn
from torchtcn import TCN, SequenceModel
from torchtcn.layers import FiLM, ResidualBlock
from torchtcn.tasks import get_task

CONFIGS = [
    dict(in_channels=2, channels=[6, 5, 5], kernel_size=3),
    dict(in_channels=2, channels=[6, 5], kernel_size=3, norm="layer", gate="wavenet"),
    dict(in_channels=2, channels=[4, 6, 6], kernel_size=2, norm="batch", skip_connections=True),
    dict(in_channels=2, channels=[6, 6], kernel_size=3, causal=False, norm="layer"),
    dict(in_channels=2, channels=[5, 6], kernel_size=4, causal=False, gate="glu",
         layout="NLC", skip_connections=True),
]
COND = 4


def conditioned(cfg: dict, seed: int = 0) -> TCN:
    """A float64 eval-mode conditioned TCN whose FiLM maps (zero at init) are random."""
    torch.manual_seed(seed)
    model = TCN(**cfg, cond_channels=COND).double()
    for m in model.modules():
        if isinstance(m, FiLM):
            torch.nn.init.normal_(m.linear.weight, 0.0, 0.5)
            torch.nn.init.normal_(m.linear.bias, 0.0, 0.5)
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def sequence(model, n: int, t: int, dtype=torch.float64) -> torch.Tensor:
    c = model.in_channels
    return torch.randn((n, c, t) if model.layout == "NCL" else (n, t, c), dtype=dtype)


def time_dim(model) -> int:
    return 2 if model.layout == "NCL" else 1


def test_a_fresh_conditioned_model_computes_the_unconditioned_one():
    torch.manual_seed(0)
    plain = TCN(2, [6, 6], kernel_size=3, dropout=0.1).double().eval()
    cond_model = TCN(2, [6, 6], kernel_size=3, dropout=0.1, cond_channels=3).double().eval()
    missing, unexpected = cond_model.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(".film." in k for k in missing)
    x = torch.randn(2, 2, 30, dtype=torch.float64)
    cond = torch.randn(2, 3, dtype=torch.float64)
    torch.testing.assert_close(cond_model(x, cond=cond), plain(x), rtol=0, atol=0)


def test_cond_changes_the_output_and_its_map_learns():
    model = TCN(2, [6, 6], kernel_size=3, cond_channels=3).train()
    x, cond = torch.randn(4, 2, 25), torch.randn(4, 3)
    model(x, cond=cond).square().mean().backward()
    film = model.blocks[0].unit1.film.linear
    assert film.weight.grad.abs().sum() > 0  # zero-initialised, but not stuck there
    model = conditioned(CONFIGS[0])
    x = sequence(model, 2, 20)
    c1, c2 = torch.randn(2, COND, dtype=torch.float64), torch.randn(2, COND, dtype=torch.float64)
    assert not torch.allclose(model(x, cond=c1), model(x, cond=c2))


@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize("chunks", [[1] * 23, [5, 1, 7, 10]])
def test_streaming_with_cond_equals_forward(cfg, chunks):
    model = conditioned(cfg)
    n, t = 3, sum(chunks)
    x = sequence(model, n, t)
    cond = torch.randn(n, COND, dtype=torch.float64)
    state = model.init_state(n)
    outs, start, td = [], 0, time_dim(model)
    for size in chunks:
        y, state = model.step(x.narrow(td, start, size), state, cond=cond)
        outs.append(y)
        start += size
    tail, state = model.flush(state, cond=cond)
    streamed = torch.cat(outs + [tail], td).narrow(td, model.stream_delay, t)
    torch.testing.assert_close(streamed, model(x, cond=cond), rtol=0, atol=1e-12)


def test_selected_streams_keep_their_own_cond():
    model = conditioned(CONFIGS[0])
    x = sequence(model, 3, 16)
    cond = torch.randn(3, COND, dtype=torch.float64)
    full = model(x, cond=cond)
    state = model.init_state(3)
    first, state = model.step(x[:, :, :9], state, cond=cond)
    order = [2, 0]
    rest, _ = model.step(x[order, :, 9:], state.select(order), cond=cond[order])
    torch.testing.assert_close(rest, full[order, :, 9:], rtol=0, atol=1e-12)


@pytest.mark.parametrize("cfg", [CONFIGS[0], CONFIGS[3]])
def test_conditioned_models_are_causal_and_keep_their_receptive_field(cfg):
    model = conditioned(cfg)
    assert torchtcn.measure_receptive_field(model) == (model.receptive_field, model.lookahead)
    if model.config.causal:
        assert torchtcn.check_causality(model)
    x = sequence(model, 2, 40)
    cond = torch.randn(2, COND, dtype=torch.float64)
    x2 = x.clone()
    x2[:, :, 25:] += 1.0
    if model.config.causal:
        torch.testing.assert_close(model(x2, cond=cond)[:, :, :25], model(x, cond=cond)[:, :, :25],
                                   rtol=0, atol=0)


def test_low_memory_recomputation_passes_cond():
    torch.manual_seed(0)
    kwargs = dict(in_channels=2, channels=[6, 6], kernel_size=3, dropout=0.2, cond_channels=3)
    plain, lean = TCN(**kwargs).double(), TCN(**kwargs, low_memory=True).double()
    lean.load_state_dict(plain.state_dict())
    for m in plain.modules():
        if isinstance(m, FiLM):
            torch.nn.init.normal_(m.linear.weight)
    lean.load_state_dict(plain.state_dict())
    x = torch.randn(3, 2, 30, dtype=torch.float64)
    cond = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    grads = []
    for model in (plain, lean):
        torch.manual_seed(7)  # the same dropout masks
        model(x, cond=cond).sin().sum().backward()
        grads.append([cond.grad.clone()] + [p.grad.clone() for p in model.parameters()])
        cond.grad = None
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_second_derivatives_through_cond():
    model = conditioned(CONFIGS[0]).train()
    x = torch.randn(2, 2, 12, dtype=torch.float64)
    cond = torch.randn(2, COND, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda c: model(x, cond=c), (cond,))


def test_a_film_block_never_runs_without_its_cond():
    # the fused training path knows nothing of FiLM: it must not run a block that has one
    block = ResidualBlock(2, 4, 3, 1, cond_channels=3).train()
    x = torch.randn(2, 2, 10, requires_grad=True)
    with pytest.raises(ValueError, match="cond_channels=3"):
        block(x)
    assert block(x, cond=torch.randn(2, 3)).shape == (2, 4, 10)


def test_bad_cond_is_named():
    model = TCN(2, [4, 4], cond_channels=3)
    x = torch.randn(2, 2, 10)
    with pytest.raises(ValueError, match=r"cond_channels=3\): pass cond of shape \(N, 3\)"):
        model(x)
    with pytest.raises(ValueError, match=r"shape \(N, cond_channels\) = \(2, 3\), got \(2, 4\)"):
        model(x, cond=torch.randn(2, 4))
    with pytest.raises(ValueError, match=r"= \(2, 3\), got \(3,\)"):
        model(x, cond=torch.randn(3))
    with pytest.raises(TypeError, match="cond must be a torch.Tensor, got list"):
        model(x, cond=[[0.0] * 3] * 2)
    with pytest.raises(TypeError, match="cond dtype must be torch.float32"):
        model(x, cond=torch.randn(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="built without conditioning"):
        TCN(2, [4])(x, cond=torch.randn(2, 3))
    model.eval()
    with pytest.raises(ValueError, match="pass cond"):
        model.step(x, model.init_state(2))
    with pytest.raises(ValueError, match=r"\(2, 3\), got \(1, 3\)"):
        model.step(x, model.init_state(2), cond=torch.randn(1, 3))
    for bad, err in [(-1, ValueError), ("2", TypeError), (True, TypeError)]:
        with pytest.raises(err, match="cond_channels"):
            TCN(2, [4], cond_channels=bad)


def test_save_load_keeps_the_conditioning(tmp_path):
    model = conditioned(CONFIGS[1])
    torchtcn.save(model, tmp_path / "m.safetensors")
    loaded = torchtcn.load(tmp_path / "m.safetensors").double().eval()
    assert loaded.config.cond_channels == COND
    x, cond = sequence(model, 2, 15), torch.randn(2, COND, dtype=torch.float64)
    torch.testing.assert_close(loaded(x, cond=cond), model(x, cond=cond), rtol=0, atol=0)
    assert "conditioned (FiLM, cond_channels=4)" in torchtcn.summary(model)


@pytest.mark.parametrize("head", ["last_step", "mean", "per_step"])
def test_sequence_model_passes_cond_to_its_body(head):
    body = conditioned(CONFIGS[0])
    model = SequenceModel(body, head=head, out_features=3).double().eval()
    x = torch.randn(3, 2, 14, dtype=torch.float64)
    cond = torch.randn(3, COND, dtype=torch.float64)
    lengths = torch.tensor([14, 6, 9])
    padded = model(x, lengths=lengths, cond=cond)
    for i, length in enumerate(lengths.tolist()):
        alone = model(x[i : i + 1, :, :length], cond=cond[i : i + 1])
        got = padded[i : i + 1] if head != "per_step" else padded[i : i + 1, :, :length]
        torch.testing.assert_close(got, alone, rtol=0, atol=1e-12)
    y, _ = model.step(x, model.init_state(3), cond=cond)
    full = model(x, cond=cond)
    torch.testing.assert_close(y if head == "per_step" else y[:, :, -1], full, rtol=0, atol=1e-12)


def test_only_a_tcn_body_takes_cond():
    model = SequenceModel(torchtcn.LSTM(2, hidden_size=4), head="last_step", out_features=1)
    with pytest.raises(ValueError, match="LSTM body takes no conditioning"):
        model(torch.randn(2, 2, 5), cond=torch.randn(2, 3))


def test_generate_feeds_back_under_cond():
    torch.manual_seed(0)
    model = conditioned(dict(in_channels=2, channels=[6, 2], kernel_size=3))
    prompt = torch.randn(2, 2, 5, dtype=torch.float64)
    cond = torch.randn(2, COND, dtype=torch.float64)
    out = torchtcn.generate(model, prompt, steps=6, cond=cond)
    # every generated frame is the full forward pass's output one frame earlier
    torch.testing.assert_close(out[:, :, 5:], model(out[:, :, :-1], cond=cond)[:, :, 4:],
                               rtol=0, atol=1e-12)


def test_tasks_refuse_cond_channels():
    with pytest.raises(ValueError, match="unknown setting 'cond_channels'"):
        get_task("jsb").resolve("tcn", {"cond_channels": "3"})


# -- export ------------------------------------------------------------------------------------
@pytest.mark.parametrize("cfg", [CONFIGS[0], CONFIGS[4]])
def test_onnx_exports_take_cond(cfg, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from torchtcn.export import export_onnx, export_step_onnx, initial_step_state

    model = conditioned(cfg).float()
    sess = ort.InferenceSession(str(export_onnx(model, tmp_path / "m.onnx")))
    assert [i.name for i in sess.get_inputs()] == ["x", "cond"]
    x, cond = sequence(model, 3, 21, torch.float32), torch.randn(3, COND)
    (y,) = sess.run(None, {"x": x.numpy(), "cond": cond.numpy()})
    torch.testing.assert_close(torch.from_numpy(y), model(x, cond=cond), rtol=0, atol=1e-5)

    sess = ort.InferenceSession(str(export_step_onnx(model, tmp_path / "s.onnx", batch_size=3)))
    names = [i.name for i in sess.get_inputs()]
    assert names[-1] == "cond"
    carried = [t.numpy() for t in initial_step_state(model, 3)]
    state = model.init_state(3)
    td = time_dim(model)
    for i in range(21):
        frame = x.narrow(td, i, 1)
        y, state = model.step(frame, state, cond=cond)
        y_onnx, *carried = sess.run(None, dict(zip(names, [frame.numpy(), *carried, cond.numpy()])))
        torch.testing.assert_close(torch.from_numpy(y_onnx), y, rtol=0, atol=1e-5)

    clf = SequenceModel(model, head="mean", out_features=2).eval()
    sess = ort.InferenceSession(str(export_onnx(clf, tmp_path / "clf.onnx")))
    (y,) = sess.run(None, {"x": x.numpy(), "cond": cond.numpy()})
    torch.testing.assert_close(torch.from_numpy(y), clf(x, cond=cond), rtol=0, atol=1e-5)


def test_torchscript_and_torch_export_steps_take_cond(tmp_path):
    from torchtcn.export import (StepModule, export_step_program, export_step_torchscript,
                                 initial_step_state)

    model = conditioned(CONFIGS[3]).float()
    assert StepModule(model).input_names == ["x", "state", "age", "end", "cond"]
    scripted = torch.jit.load(str(export_step_torchscript(model, tmp_path / "s.pt", batch_size=2)))
    program = torch.export.load(str(export_step_program(model, tmp_path / "s.pt2"))).module()
    cond = torch.randn(3, COND)
    state = model.init_state(3)
    carried = {"ts": list(initial_step_state(model, 3)), "ep": list(initial_step_state(model, 3))}
    for _ in range(20):
        x = torch.randn(3, 2, 1)
        y, state = model.step(x, state, cond=cond)
        for key, fn in (("ts", scripted), ("ep", program)):
            y_exported, *carried[key] = fn(x, *carried[key], cond)
            torch.testing.assert_close(y_exported, y, rtol=0, atol=1e-5)
    with pytest.raises(TypeError, match=r"takes \(x, state, age, end, cond\), got 4 inputs"):
        StepModule(model)(torch.randn(3, 2, 1), *initial_step_state(model, 3))
