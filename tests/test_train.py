"""The trainer: determinism, exact resume, clipping after backward, limits, NaN stop, logs."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from torchtcn import train as T
from torchtcn.checkpoint import load_checkpoint
from torchtcn.tasks import build_run

# A tiny adding problem with dropout, so the RNG state matters for exact resume.
# A constant lr (the adding preset's cosine depends on the planned epochs, which several tests
# change on resume), pinned at 2e-3 so the schedule tests need not follow the preset's lr.
TINY = {"T": "16", "n_train": "96", "n_valid": "32", "n_test": "32", "channels": "6,6",
        "kernel_size": "4", "dropout": "0.2", "batch_size": "16", "eval_batch_size": "32",
        "schedule": "none", "lr": "2e-3"}


def _trainer(out=None, overrides=None, **train):
    run = build_run("adding200", "tcn", {**TINY, **(overrides or {})}, **train)
    return T.Trainer(run.task, run.model, run.datasets, run.spec.train, out,
                     run_info=run.spec.to_dict(), quiet=True, use_tensorboard=False)


def _weights(trainer):
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_same_seed_same_weights_other_seed_differs():
    a, b, c = _trainer(epochs=1), _trainer(epochs=1), _trainer(epochs=1, seed=7)
    for t in (a, b, c):
        t.fit()
    _assert_same(_weights(a), _weights(b))
    assert any(not torch.equal(x, y) for x, y in zip(_weights(a).values(), _weights(c).values()))


def test_resume_equals_uninterrupted(tmp_path):
    full = _trainer(tmp_path / "full", epochs=2)
    r_full = full.fit()
    first = _trainer(tmp_path / "split", epochs=1)
    first.fit()
    second = _trainer(tmp_path / "split", epochs=2)
    r_split = second.fit(resume=True)
    _assert_same(_weights(full), _weights(second))
    assert r_split.steps == r_full.steps == 12 and r_split.epochs == 2
    assert [h["valid_mse"] for h in r_split.history] == [h["valid_mse"] for h in r_full.history]
    assert r_split.test == r_full.test
    # the metrics log of the resumed run is the uninterrupted one (no duplicated epochs)
    logged = [json.loads(x)["epoch"] for x in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert logged == [1, 2]


def test_mid_epoch_stop_and_resume_equals_uninterrupted(tmp_path):
    full = _trainer(tmp_path / "full", epochs=2, overrides={"schedule": "plateau", "optimizer": "sgd",
                                                            "lr": "0.05", "momentum": "0.9"})
    full.fit()
    cut = _trainer(tmp_path / "cut", epochs=2, max_steps=9, overrides={
        "schedule": "plateau", "optimizer": "sgd", "lr": "0.05", "momentum": "0.9"})
    r = cut.fit()
    assert not r.complete and "max_steps=9" in r.stop_reason and r.steps == 9 and r.epochs == 1
    assert load_checkpoint(tmp_path / "cut" / "last.ckpt").trainer_state["step_in_epoch"] == 3
    rest = _trainer(tmp_path / "cut", epochs=2, overrides={"schedule": "plateau", "optimizer": "sgd",
                                                           "lr": "0.05", "momentum": "0.9"})
    r2 = rest.fit(resume=True)
    assert r2.complete and r2.steps == 12
    _assert_same(_weights(full), _weights(rest))


def test_resume_refuses_a_different_run(tmp_path):
    _trainer(tmp_path / "r", epochs=1).fit()
    other = _trainer(tmp_path / "r", epochs=2, overrides={"lr": "0.1"})
    with pytest.raises(ValueError, match="train.lr") as err:
        other.fit(resume=True)
    # the overrides that resume it are named (a preset changed since the run, say)
    assert "resume with the run's own settings as key=value overrides" in str(err.value)


def test_resume_with_fewer_epochs_than_already_trained_is_refused(tmp_path):
    _trainer(tmp_path / "r", epochs=2).fit()
    with pytest.raises(ValueError, match=r"already trained 2 epochs, but epochs=1"):
        _trainer(tmp_path / "r", epochs=1).fit(resume=True)
    assert _trainer(tmp_path / "r", epochs=2).fit(resume=True).epochs == 2  # the same plan is fine


def test_clipping_happens_after_backward():
    trainer = _trainer(epochs=1, overrides={"optimizer": "sgd", "lr": "1.0", "clip": "1e-3"})
    before = torch.cat([p.detach().flatten().clone() for p in trainer.model.parameters()])
    ds = trainer.datasets["train"]
    trainer.train_step(ds.batch(torch.arange(16)))
    after = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
    grad_norm = torch.cat([p.grad.flatten() for p in trainer.model.parameters()]).norm()
    # SGD with lr 1: the update is the clipped gradient, whose norm is the clip threshold.
    assert (after - before).norm() == pytest.approx(1e-3, rel=1e-4)
    assert grad_norm == pytest.approx(1e-3, rel=1e-4)


def test_non_finite_loss_stops_and_keeps_best(tmp_path):
    trainer = _trainer(tmp_path / "nan", epochs=3)
    step = trainer.task.step
    calls = {"n": 0}

    def poisoned(model, batch):
        loss, totals = step(model, batch)
        if model.training:
            calls["n"] += 1
            if calls["n"] == 9:  # the 3rd step of epoch 2
                return loss * float("nan"), totals
        return loss, totals

    trainer.task = dataclasses.replace(trainer.task)  # a private copy: the registry's is shared
    trainer.task.step = poisoned
    r = trainer.fit()
    best_before = (tmp_path / "nan" / "best.ckpt").read_bytes()
    assert not r.complete and "non-finite" in r.stop_reason and "step 9" in r.stop_reason
    assert r.epochs == 1 and r.best_epoch == 1 and math.isfinite(r.test["mse"])
    assert (tmp_path / "nan" / "best.ckpt").read_bytes() == best_before
    assert load_checkpoint(tmp_path / "nan" / "best.ckpt").trainer_state["epoch"] == 1


def test_time_limit_marks_incomplete():
    r = _trainer(epochs=50, time_limit=1e-9).fit()
    assert not r.complete and "time_limit" in r.stop_reason and r.steps == 0
    assert math.isfinite(r.test["mse"])  # still tested (the initial model)


def test_a_run_stopped_before_its_first_epoch_warns_that_the_model_is_unvalidated(tmp_path, caplog):
    with caplog.at_level("WARNING", logger="torchtcn"):
        r = _trainer(tmp_path / "run", epochs=2, max_steps=3).fit()
    assert r.best_epoch is None and r.steps == 3
    assert "unvalidated weights at step 3" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="torchtcn"):
        _trainer(tmp_path / "full", epochs=1).fit()
    assert "unvalidated" not in caplog.text


def test_logs_checkpoints_and_plots(tmp_path):
    r = _trainer(tmp_path / "run", epochs=2).fit()
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"last.ckpt", "best.ckpt", "metrics.csv", "metrics.jsonl", "model.safetensors", "curves.png"} <= files
    header = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"epoch", "step", "train_loss", "valid_mse", "test_mse", "lr"} <= set(header)
    assert (tmp_path / "run" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(r.test_history) == 2  # adding tests every epoch (the paper's last-3 mean)


def test_lr_schedules():
    step = _trainer(epochs=3, overrides={"schedule": "step", "lr_step": "1", "lr_factor": "0.5"})
    r = step.fit()
    assert [h["lr"] for h in r.history] == pytest.approx([2e-3, 1e-3, 5e-4])
    cosine = _trainer(epochs=4, overrides={"schedule": "cosine"}).fit()
    assert [h["lr"] for h in cosine.history] == pytest.approx(
        [2e-3 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(4)])  # 2e-3, 1.71e-3, 1e-3, 2.9e-4


def test_resume_keeps_the_cosine_schedule(tmp_path):
    full = _trainer(tmp_path / "full", epochs=3, overrides={"schedule": "cosine"})
    full.fit()
    _trainer(tmp_path / "split", epochs=3, max_steps=8, overrides={"schedule": "cosine"}).fit()
    rest = _trainer(tmp_path / "split", epochs=3, overrides={"schedule": "cosine"})
    r = rest.fit(resume=True)
    assert r.complete and [h["lr"] for h in r.history] == [h["lr"] for h in full.state["history"]]
    _assert_same(_weights(full), _weights(rest))


def test_a_cosine_run_extended_on_resume_continues_on_the_longer_cosine(tmp_path):
    # The epochs already trained keep the lr they had; the rest follow the longer plan (the
    # optimizer's stored lr, that of the shorter plan, is not carried over).
    short = _trainer(tmp_path / "run", epochs=2, overrides={"schedule": "cosine"}).fit()
    assert [h["lr"] for h in short.history] == pytest.approx([2e-3, 1e-3])
    r = _trainer(tmp_path / "run", epochs=4, overrides={"schedule": "cosine"}).fit(resume=True)
    four = [2e-3 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(4)]
    assert [h["lr"] for h in r.history] == pytest.approx([2e-3, 1e-3, four[2], four[3]])


@pytest.mark.parametrize("bad, match", [
    ({"epochs": 0}, "epochs must be a positive int"),
    ({"optimizer": "adamw"}, "optimizer must be one of"),
    ({"schedule": "linear"}, "schedule must be one of"),
    ({"lr": -1.0}, "lr must be a positive number"),
    ({"clip": 0.0}, "clip must be > 0"),
    ({"device": "tpu"}, "device must be"),
])
def test_config_validation(bad, match):
    with pytest.raises(ValueError, match=match):
        T.TrainConfig(**bad)


def test_cuda_requested_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(ValueError, match="CUDA is not available"):
        T.resolve_device("cuda")


def test_resume_restores_the_regress_schedule(tmp_path):
    over = {"schedule": "regress", "lr_after": "0", "lr_window": "1", "lr_factor": "0.5"}
    full = _trainer(tmp_path / "full", epochs=3, overrides=over)
    full.fit()
    _trainer(tmp_path / "split", epochs=1, overrides=over).fit()
    second = _trainer(tmp_path / "split", epochs=3, overrides=over)
    second.fit(resume=True)
    assert second.scheduler.history == full.scheduler.history and len(full.scheduler.history) == 3
    assert second.optimizer.param_groups[0]["lr"] == full.optimizer.param_groups[0]["lr"]
    _assert_same(_weights(full), _weights(second))


@pytest.mark.parametrize("key,value", [("lr_factor", "1.5"), ("lr_window", "0"), ("lr_after", "-1")])
def test_bad_schedule_settings_are_named(key, value):
    with pytest.raises(ValueError, match=key):
        _trainer(epochs=1, overrides={"schedule": "regress", key: value})


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_a_signal_stops_cleanly_and_resume_equals_uninterrupted(tmp_path, signame):
    import os
    import signal

    full = _trainer(tmp_path / "full", epochs=2)
    full.fit()
    cut = _trainer(tmp_path / "cut", epochs=2)
    step, calls = cut.train_step, {"n": 0}

    def signalled_step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 8:  # mid-way through epoch 2 (6 steps per epoch)
            os.kill(os.getpid(), getattr(signal, signame))
        return step(*args, **kwargs)

    cut.train_step = signalled_step
    before = signal.getsignal(signal.SIGINT)
    r = cut.fit()
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored
    assert not r.complete and r.stop_reason == f"stopped by {signame}" and r.steps == 8
    assert math.isfinite(r.test["mse"])  # the best model was still tested
    assert load_checkpoint(tmp_path / "cut" / "last.ckpt").trainer_state["step"] == 8
    rest = _trainer(tmp_path / "cut", epochs=2)
    assert rest.fit(resume=True).complete
    _assert_same(_weights(full), _weights(rest))


def _scripted_validation(trainer, curve):
    """Make epoch e's validation MSE ``curve[e - 1]`` (training and testing stay real)."""
    evaluate = trainer.evaluate

    def scripted(split, model=None):
        out = evaluate(split, model)
        if split == "valid":
            out = {**out, "mse": curve[trainer.state["epoch"]]}
        return out

    trainer.evaluate = scripted
    return trainer


CURVE = [5.0, 4.0, 4.5, 4.1, 3.0, 2.0, 1.0, 0.5]  # best at epoch 2, then 2 epochs without a better one


def test_early_stop_ends_a_complete_run_and_resume_stops_at_the_same_epoch(tmp_path):
    full = _scripted_validation(_trainer(tmp_path / "full", epochs=8, overrides={"early_stop": "2"}), CURVE)
    r = full.fit()
    assert r.complete and r.epochs == 4 and r.steps == 4 * 6 and r.best_epoch == 2 and r.best_valid == 4.0
    assert r.stop_reason == "early stop: no better validation mse in 2 epochs"
    # epochs 5-8 would have improved: the rule, not the epoch budget, ended the run
    split = _scripted_validation(_trainer(tmp_path / "split", epochs=3, overrides={"early_stop": "2"}), CURVE)
    assert split.fit().stop_reason is None
    rest = _scripted_validation(_trainer(tmp_path / "split", epochs=8, overrides={"early_stop": "2"}), CURVE)
    r2 = rest.fit(resume=True)
    assert (r2.epochs, r2.steps, r2.stop_reason, r2.complete) == (4, 24, r.stop_reason, True)
    _assert_same(_weights(full), _weights(rest))
    # without the rule the same run trains on
    assert _scripted_validation(_trainer(epochs=6), CURVE).fit().epochs == 6


def test_min_lr_ends_the_run_once_annealed_below_it():
    over = {"schedule": "step", "lr_step": "1", "lr_factor": "0.5", "min_lr": "6e-4"}
    r = _trainer(epochs=10, overrides=over).fit()
    # lr 2e-3 (epoch 1), 1e-3 (epoch 2), then 5e-4 < 6e-4: no third epoch
    assert [h["lr"] for h in r.history] == pytest.approx([2e-3, 1e-3])
    assert r.complete and r.epochs == 2 and r.stop_reason == "early stop: lr 0.0005 annealed below min_lr=0.0006"


@pytest.mark.parametrize("bad, match", [
    ({"early_stop": 0}, "early_stop must be a positive int or None"),
    ({"min_lr": 0.0}, "min_lr must be a positive number"),
    ({"min_lr": float("nan")}, "min_lr must be a positive number"),
    ({"lr_patience": -3}, "lr_patience must be an int >= 0"),
    ({"lr_after": -1}, "lr_after must be an int >= 0"),
])
def test_early_stop_settings_are_checked(bad, match):
    with pytest.raises(ValueError, match=match):
        T.TrainConfig(**bad)
