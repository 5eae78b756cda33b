"""The weight average (``ema=...``): the arithmetic, and the trainer validating, checkpointing,
resuming and saving the average instead of the raw weights."""

from __future__ import annotations

import json

import pytest
import torch

import torchtcn
from torchtcn import train as T
from torchtcn.averaging import WeightEMA, warmup_decay
from torchtcn.checkpoint import load_checkpoint, save_checkpoint
from torchtcn.commands.eval import evaluate_checkpoint
from torchtcn.tasks import build_run

TINY = {"T": "16", "n_train": "96", "n_valid": "32", "n_test": "32", "channels": "6,6",
        "kernel_size": "4", "dropout": "0.2", "batch_size": "16", "eval_batch_size": "32",
        "schedule": "none", "lr": "5e-3"}


def _trainer(out=None, overrides=None, **train):
    run = build_run("adding200", "tcn", {**TINY, "ema": "0.9", **(overrides or {})}, **train)
    return T.Trainer(run.task, run.model, run.datasets, run.spec.train, out,
                     run_info=run.spec.to_dict(), quiet=True, use_tensorboard=False)


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_update_is_the_warmed_up_exponential_average():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2)).double()
    ema = WeightEMA(model, decay=0.5)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    for n in range(4):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model.train()(torch.randn(5, 3, dtype=torch.float64))  # moves the BatchNorm statistics
        ema.update(model, updates_before=n)
        keep = min(0.5, (1 + n) / (10 + n))
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                expected[k] = keep * expected[k] + (1 - keep) * v
            else:
                expected[k] = v.clone()  # num_batches_tracked: copied, not averaged
    got = ema.state_dict()
    for k in expected:
        assert torch.allclose(got[k], expected[k], rtol=0, atol=1e-12), k
    assert got["1.num_batches_tracked"].item() == 4
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_a_tied_embedding_and_decoder_are_averaged_once():
    model = torchtcn.LanguageModel(torchtcn.TCN(4, [5, 4]), vocab_size=7, tie_weights=True)
    ema = WeightEMA(model, decay=0.5)
    before = ema.module.embedding.weight.clone()
    with torch.no_grad():
        model.embedding.weight.add_(1.0)
    ema.update(model, updates_before=100)  # warmed up: keep 0.5
    assert ema.module.decoder.weight is ema.module.embedding.weight
    assert torch.allclose(ema.module.embedding.weight, before + 0.5)


@pytest.mark.parametrize("decay", [0, 1, 1.5, -0.1, True, "0.9"])
def test_decay_outside_zero_one_is_refused(decay):
    with pytest.raises(ValueError, match="decay must be a number in"):
        WeightEMA(torch.nn.Linear(2, 2), decay)
    if not isinstance(decay, str):
        with pytest.raises(ValueError, match="ema must be a decay in"):
            T.TrainConfig(ema=decay)


def test_update_from_another_architecture_is_refused():
    """zip() paired the shared leading tensors and ignored the rest without a word."""
    ema = WeightEMA(torchtcn.TCN(1, [4, 4]), 0.5)
    for other in (torchtcn.TCN(1, [4, 4, 4]), torchtcn.TCN(1, [4, 5])):
        with pytest.raises(ValueError, match="does not match the averaged one"):
            ema.update(other, 100)


def test_warmup_decay():
    assert warmup_decay(0.999, 0) == pytest.approx(0.1)
    assert warmup_decay(0.999, 8) == pytest.approx(0.5)
    assert warmup_decay(0.999, 10**5) == 0.999


def test_validation_and_the_saved_model_use_the_average(tmp_path):
    trainer = _trainer(tmp_path / "run", epochs=1)  # one epoch: the best is the final average
    result = trainer.fit()
    raw = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    avg = trainer.ema.state_dict()
    assert not _same(raw, avg)  # the average really differs from the last iterate
    # the last epoch's validation is the average's, not the raw weights'
    last = result.history[-1]["valid_mse"]
    assert trainer.evaluate("valid")["mse"] == pytest.approx(last, rel=1e-6)
    assert trainer.evaluate("valid", trainer.model)["mse"] != pytest.approx(last, rel=1e-6)
    best = load_checkpoint(tmp_path / "run" / "best.ckpt")
    assert best.averaged is not None and best.inference_model is best.averaged
    assert _same(best.inference_model.state_dict(), avg)
    assert _same(torchtcn.load(tmp_path / "run" / "model.safetensors").state_dict(), avg)
    # torchtcn eval scores the average, and so reproduces the run's test number
    out = evaluate_checkpoint(tmp_path / "run", "test", device="cpu")
    assert out["metrics"]["mse"] == pytest.approx(result.test["mse"], rel=1e-6)


def test_resume_continues_the_average_exactly(tmp_path):
    full = _trainer(tmp_path / "full", epochs=2)
    r_full = full.fit()
    cut = _trainer(tmp_path / "cut", epochs=2, max_steps=9)  # stops mid-epoch 2
    cut.fit()
    rest = _trainer(tmp_path / "cut", epochs=2)
    r_rest = rest.fit(resume=True)
    assert _same(full.ema.state_dict(), rest.ema.state_dict())
    assert _same(full.model.state_dict(), rest.model.state_dict())
    assert [h["valid_mse"] for h in r_rest.history] == [h["valid_mse"] for h in r_full.history]
    assert r_rest.test == r_full.test


def test_a_run_without_ema_keeps_no_average(tmp_path):
    trainer = _trainer(tmp_path / "run", epochs=1, overrides={"ema": "none"})
    trainer.fit()
    assert trainer.ema is None and trainer.eval_model is trainer.model
    ckpt = load_checkpoint(tmp_path / "run" / "last.ckpt")
    assert ckpt.averaged is None and ckpt.inference_model is ckpt.model


def test_resume_of_a_checkpoint_without_average_is_refused(tmp_path):
    run = _trainer(tmp_path / "run", epochs=1)
    run.fit()
    path = tmp_path / "run" / "last.ckpt"
    ckpt = load_checkpoint(path)
    save_checkpoint(path, ckpt.model, trainer_state=ckpt.trainer_state)  # average dropped
    with pytest.raises(ValueError, match="holds no weight average"):
        _trainer(tmp_path / "run", epochs=2).fit(resume=True)


def test_checkpoint_refuses_an_average_of_another_architecture(tmp_path):
    with pytest.raises(ValueError, match="averaged must be a copy of model"):
        save_checkpoint(tmp_path / "x.ckpt", torchtcn.TCN(1, [4]), averaged=torchtcn.TCN(1, [5]))
    assert not (tmp_path / "x.ckpt").exists()


def test_corrupted_averaged_weights_name_the_file(tmp_path):
    model = torchtcn.TCN(1, [4, 4], kernel_size=3)
    path = tmp_path / "a.ckpt"
    save_checkpoint(path, model, averaged=WeightEMA(model, 0.9).module)
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    meta.pop("torchtcn_sha256")  # a crafted file without a digest: the shape check must catch it
    tensors = load_file(path)
    key = next(k for k in tensors if k.startswith("averaged."))
    tensors[key] = torch.zeros(3)
    save_file(tensors, path, metadata=meta)
    with pytest.raises(ValueError, match="a.ckpt: averaged weights do not match"):
        load_checkpoint(path)


def test_ema_is_a_train_setting_recorded_in_the_run_spec():
    run = build_run("adding200", "tcn", {**TINY, "ema": "0.99"})
    assert run.spec.train.ema == 0.99
    assert json.loads(json.dumps(run.spec.to_dict()))["train"]["ema"] == 0.99
