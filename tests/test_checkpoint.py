"""Checkpoints: safetensors + JSON, exact round trips, atomic writes, clear errors, no pickle."""

from __future__ import annotations

import json
import random
import struct

import numpy as np
import pytest
import torch

import torchtcn
from torchtcn import checkpoint as C


def _model():
    body = torchtcn.TCN(3, [6, 6], kernel_size=3, dropout=0.1)
    return torchtcn.SequenceModel(body, "per_step", 2)


def _trained(model, opt, steps=3):
    for _ in range(steps):
        loss = model(torch.randn(4, 3, 10)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.parametrize("opt_cls", [torch.optim.Adam, torch.optim.RMSprop, torch.optim.SGD])
def test_round_trip_model_optimizer_scheduler(tmp_path, opt_cls):
    model = _model()
    kw = {"momentum": 0.9} if opt_cls is torch.optim.SGD else {}
    opt = opt_cls(model.parameters(), lr=1e-2, **kw)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=0)
    _trained(model, opt)
    sched.step(1.0)
    sched.step(2.0)  # no improvement: lr halves, the scheduler state is non-trivial
    path = tmp_path / "last.ckpt"
    C.save_checkpoint(path, model, opt, sched, trainer_state={"epoch": 2, "best": 0.5})
    ckpt = C.load_checkpoint(path)
    assert ckpt.trainer_state == {"epoch": 2, "best": 0.5}
    for (k, a), (_, b) in zip(model.state_dict().items(), ckpt.model.state_dict().items()):
        assert torch.equal(a, b), k
    opt2 = opt_cls(ckpt.model.parameters(), lr=1.0, **kw)
    opt2.load_state_dict(ckpt.optimizer_state)
    sched2 = torch.optim.lr_scheduler.ReduceLROnPlateau(opt2)
    sched2.load_state_dict(ckpt.scheduler_state)
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"] == 5e-3
    assert sched2.num_bad_epochs == sched.num_bad_epochs and sched2.best == sched.best
    # Continuing both gives the same weights bit for bit (optimizer state restored exactly).
    torch.manual_seed(5)
    _trained(model, opt, 2)
    torch.manual_seed(5)
    _trained(ckpt.model, opt2, 2)
    for (k, a), (_, b) in zip(model.state_dict().items(), ckpt.model.state_dict().items()):
        assert torch.equal(a, b), k


def test_rng_states_restored(tmp_path):
    model = _model()
    path = tmp_path / "c.ckpt"
    C.save_checkpoint(path, model)
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.rand(7), np.random.rand(7), random.random()  # move every RNG on
    ckpt = C.load_checkpoint(path)
    C.set_rng_state(ckpt.rng["tensors"], ckpt.rng["meta"])
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], got[0])
    assert np.array_equal(expected[1], got[1])
    assert expected[2] == got[2]


def test_tied_language_model_round_trip(tmp_path):
    lm = torchtcn.LanguageModel(torchtcn.TCN(8, [8, 8], kernel_size=2), vocab_size=13)
    path = tmp_path / "lm.ckpt"
    C.save_checkpoint(path, lm, torch.optim.SGD(lm.parameters(), lr=0.1))
    back = C.load_checkpoint(path).model
    assert back.decoder.weight is back.embedding.weight  # still tied after loading
    assert torch.equal(back.embedding.weight, lm.embedding.weight)


def test_file_is_safetensors_with_json_state_and_no_pickle(tmp_path):
    path = tmp_path / "c.ckpt"
    C.save_checkpoint(path, _model(), trainer_state={"epoch": 1})
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    doc = json.loads(header["__metadata__"][C.CHECKPOINT_KEY])
    assert doc["trainer"] == {"epoch": 1} and doc["model"]["name"] == "sequence_model"
    assert b"\x80\x04" not in raw[:8 + n] and not raw.startswith(b"\x80")  # no pickle stream
    assert all(k.split(".")[0] in ("model", "optimizer", "rng") for k in header if k != "__metadata__")


def test_interrupted_write_leaves_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    C.save_checkpoint(path, _model(), trainer_state={"epoch": 1})
    before = path.read_bytes()

    def crash(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(C.os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        C.save_checkpoint(path, _model(), trainer_state={"epoch": 2})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no temp file left


@pytest.mark.parametrize("damage", ["truncate", "garbage", "flip_header", "empty", "flip_weight"])
def test_corrupted_checkpoint_is_a_clear_error(tmp_path, damage):
    path = tmp_path / "best.ckpt"
    C.save_checkpoint(path, _model(), trainer_state={"epoch": 1})
    raw = path.read_bytes()
    if damage == "truncate":
        raw = raw[: len(raw) // 2]
    elif damage == "garbage":
        raw = b"this is not a checkpoint at all" * 10
    elif damage == "flip_header":
        raw = raw[:8] + b"{" * 20 + raw[28:]
    elif damage == "flip_weight":  # a valid structure: only the recorded digest can tell
        raw = raw[:-3] + bytes([raw[-3] ^ 0x10]) + raw[-2:]
    else:
        raw = b""
    path.write_bytes(raw)
    with pytest.raises(ValueError, match="best.ckpt"):
        C.load_checkpoint(path)
    assert path.read_bytes() == raw  # loading never writes


def test_model_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "model.safetensors"
    torchtcn.save(_model(), path)
    with pytest.raises(ValueError, match="not a torchtcn checkpoint"):
        C.load_checkpoint(path)
    with pytest.raises(FileNotFoundError):
        C.load_checkpoint(tmp_path / "missing.ckpt")


def test_weights_that_do_not_fit_the_spec(tmp_path):
    path = tmp_path / "c.ckpt"
    model = _model()
    C.save_checkpoint(path, model, trainer_state={})
    doc = C.read_checkpoint_state(path)
    doc["model"]["config"]["out_features"] = 3  # spec no longer matches the stored head
    other = tmp_path / "bad.ckpt"
    from safetensors.torch import load_file, save_file

    save_file(load_file(str(path)), str(other), metadata={C.CHECKPOINT_KEY: json.dumps(doc)})
    with pytest.raises(ValueError, match="do not match"):
        C.load_checkpoint(other)


def test_state_must_be_json(tmp_path):
    with pytest.raises(TypeError, match="JSON"):
        C.save_checkpoint(tmp_path / "c.ckpt", _model(), trainer_state={"x": object()})


def test_adam_step_counters_stay_on_the_cpu_when_loaded_for_a_device(tmp_path):
    # torch keeps Adam's 0-d step on the CPU; on CUDA each one there would cost a host sync
    # per parameter per step of a resumed run
    model = torchtcn.TCN(1, [4], kernel_size=2)
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 1, 5)).sum().backward()
    opt.step()
    path = tmp_path / "c.ckpt"
    C.save_checkpoint(path, model, optimizer=opt, trainer_state={"epoch": 1})
    state = C.load_checkpoint(path, device="meta").optimizer_state["state"]
    assert all(s["step"].device.type == "cpu" and s["exp_avg"].is_meta for s in state.values())
