"""When a run dies, nothing is lost; when it cannot write or diverges, it says so in time.

* a ``torchtcn train`` process really SIGKILLed in the middle of an epoch, resumed with
  ``--resume``, ends with the same weights and metrics as an uninterrupted run (bit for bit);
* a process killed inside a checkpoint write (between the temporary file and the rename)
  leaves the previous checkpoint intact and loadable;
* a full disk mid-run is a clear error naming the file, the previous checkpoint survives and
  the run resumes from it; an unwritable or nearly full output folder fails at start-up;
* NaN or Inf (in the data, the loss, or only the gradients) stops the run at the step where it
  happened, without overwriting the best or the last checkpoint.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import torchtcn
from torchtcn import checkpoint as C
from torchtcn import train as T
from torchtcn.tasks import build_run

# 96 examples in batches of 8: 12 steps an epoch. Dropout makes the RNG state part of what a
# resume must restore exactly.
CLI_ARGS = ["train", "adding200", "--model", "tcn", "--epochs", "3", "--quiet", "--no-tensorboard",
            "--device", "cpu", "--checkpoint-every", "5", "n_train=96", "n_valid=24", "n_test=24",
            "T=12", "channels=6,6", "kernel_size=3", "dropout=0.1", "batch_size=8"]
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")

# The victim is the real command with a pause after each optimizer step, so the test can catch
# it mid-epoch; the pause changes nothing that is computed.
SLOW_CLI = textwrap.dedent("""
    import sys, time
    from torchtcn import train
    step = train.Trainer.train_step
    def slow(self, *args, **kwargs):
        out = step(self, *args, **kwargs)
        time.sleep(0.03)
        return out
    train.Trainer.train_step = slow
    from torchtcn.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def _cli(args, out, timeout=120):
    proc = subprocess.run([sys.executable, "-m", "torchtcn.cli", *args, "--out", str(out)],
                          env=ENV, capture_output=True, text=True, timeout=timeout)
    return proc


def _history(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def _assert_same_tensors(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(tmp_path):
    ref, victim = tmp_path / "ref", tmp_path / "victim"
    script = tmp_path / "slow_cli.py"
    script.write_text(SLOW_CLI)
    proc = subprocess.Popen([sys.executable, str(script), *CLI_ARGS, "--out", str(victim)],
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen = None
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                state = C.read_checkpoint_state(victim / "last.ckpt")["trainer"]
            except (FileNotFoundError, ValueError):
                state = None
            # a checkpoint written in the middle of the second epoch (so a best one exists too)
            if state and state["epoch"] >= 1 and state["step_in_epoch"] > 0:
                seen = state
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.005)
    finally:
        if proc.poll() is None and seen is None:
            proc.kill()
        proc.wait(timeout=30)
    assert seen is not None, f"never saw a mid-epoch checkpoint: {proc.stderr.read()[-2000:]}"
    assert proc.returncode == -signal.SIGKILL
    assert not (victim / "adding200-tcn.json").exists()  # it really died before finishing
    on_disk = C.read_checkpoint_state(victim / "last.ckpt")["trainer"]
    assert on_disk["step_in_epoch"] > 0 and on_disk["step"] < 36  # resume starts mid-epoch

    resumed = _cli([*CLI_ARGS, "--resume"], victim)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {victim / 'last.ckpt'}" in resumed.stderr
    assert f"step {on_disk['step']}" in resumed.stderr
    uninterrupted = _cli(CLI_ARGS, ref)
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]

    _assert_same_tensors(load_file(str(ref / "model.safetensors")), load_file(str(victim / "model.safetensors")))
    ckpt_ref, ckpt_victim = C.load_checkpoint(ref / "last.ckpt"), C.load_checkpoint(victim / "last.ckpt")
    _assert_same_tensors(ckpt_ref.model.state_dict(), ckpt_victim.model.state_dict())
    assert _history(ref) == _history(victim)  # every epoch's metrics, logged once each
    a, b = (json.loads((d / "adding200-tcn.json").read_text()) for d in (ref, victim))
    assert (a["value"], a["test"], a["steps"], a["epochs"], a["best_epoch"]) == (
        b["value"], b["test"], b["steps"], b["epochs"], b["best_epoch"])
    assert a["complete"] and b["complete"] and a["steps"] == 36


KILL_DURING_WRITE = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    import torch, torchtcn
    from torchtcn import checkpoint as C

    out, what, where = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    torch.manual_seed(0)
    model = torchtcn.TCN(2, [4, 4], kernel_size=3)
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 2, 9)).sum().backward()
    opt.step()
    C.save_checkpoint(out / "last.ckpt", model, opt, trainer_state={"epoch": 1})
    torchtcn.save(model, out / "model.safetensors")
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "expected"))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    setattr(os, where, die)  # "fsync": data written, not synced; "replace": synced, not renamed
    if what == "checkpoint":
        C.save_checkpoint(out / "last.ckpt", model, opt, trainer_state={"epoch": 2})
    else:
        torchtcn.save(model, out / "model.safetensors")
    print("survived")
""")


@pytest.mark.parametrize("what", ["checkpoint", "model"])
@pytest.mark.parametrize("where", ["fsync", "replace"])
def test_kill_during_a_write_leaves_the_previous_file_intact(tmp_path, what, where):
    script = tmp_path / "kill_during_write.py"
    script.write_text(KILL_DURING_WRITE)
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run([sys.executable, str(script), str(out), what, where], env=ENV,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL and "survived" not in proc.stdout, proc.stderr
    leftovers = [p for p in out.iterdir() if ".tmp-" in p.name]
    assert len(leftovers) == 1 and leftovers[0].stat().st_size > 0  # the new data died unrenamed
    expected = load_file(str(out / "expected"))  # the weights of the first, completed write
    ckpt = C.load_checkpoint(out / "last.ckpt")
    assert ckpt.trainer_state == {"epoch": 1}
    _assert_same_tensors(ckpt.model.state_dict(), expected)
    _assert_same_tensors(torchtcn.load(out / "model.safetensors").state_dict(), expected)


# --------------------------------------------------------------------------- in-process trainer

TINY = {"T": "12", "n_train": "96", "n_valid": "32", "n_test": "32", "channels": "6,6",
        "kernel_size": "3", "dropout": "0.1", "batch_size": "16", "eval_batch_size": "32"}


def _trainer(out, **train):
    run = build_run("adding200", "tcn", dict(TINY), **train)
    task = dataclasses.replace(run.task)  # a private copy: tests patch its step
    return T.Trainer(task, run.model, run.datasets, run.spec.train, out,
                     run_info=run.spec.to_dict(), quiet=True, use_tensorboard=False)


def _weights(trainer):
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def test_disk_full_mid_run_is_clear_keeps_the_last_checkpoint_and_resumes(tmp_path, monkeypatch):
    full = _trainer(None, epochs=2, checkpoint_every=2)  # no files: no plots to draw
    full.fit()
    out = tmp_path / "run"
    trainer = _trainer(out, epochs=2, checkpoint_every=2)
    real_fsync, calls = os.fsync, {"n": 0}

    def fsync(fd):
        calls["n"] += 1
        if calls["n"] > 2:  # the first checkpoint: 1-2 (file, folder); the second fails
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(C.os, "fsync", fsync)  # between the temporary write and the rename
    with pytest.raises(OSError, match=r"could not write checkpoint .*last\.ckpt \(No space left on "
                                      r"device\); the previous checkpoint there is intact") as err:
        trainer.fit()
    assert err.value.errno == errno.ENOSPC
    monkeypatch.setattr(C.os, "fsync", real_fsync)
    state = C.read_checkpoint_state(out / "last.ckpt")["trainer"]
    assert state["step"] == 2  # the one written before the disk filled up
    assert not [p.name for p in out.iterdir() if ".tmp-" in p.name]  # no half-written files
    resumed = _trainer(out, epochs=2, checkpoint_every=2)
    resumed.fit(resume=True)
    _assert_same_tensors(_weights(full), _weights(resumed))


def test_disk_full_through_the_cli_is_an_error_message(tmp_path, monkeypatch, capsys):
    from torchtcn.cli import main

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(C.os, "fsync", no_space)
    args = ["train", "adding200", "--epochs", "1", "--quiet", "--no-tensorboard", "--device", "cpu",
            "--out", str(tmp_path / "cli"), *(f"{k}={v}" for k, v in TINY.items())]
    assert main(args) == 2
    err = capsys.readouterr().err
    # the start-up probe already hits the full disk: before any training
    assert f"cannot write checkpoints to {tmp_path / 'cli'}: No space left on device" in err


def test_unwritable_output_folder_fails_before_training(tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(ValueError, match=f"cannot write checkpoints to {blocker / 'run'}"):
        _trainer(blocker / "run", epochs=1)
    # a folder that exists but refuses writes (EACCES/EROFS); root ignores chmod, so the probe's
    # open is made to fail the way the kernel would
    real_open = open

    def read_only(path, *args, **kwargs):
        if ".write-probe-" in str(path):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(C, "open", read_only, raising=False)
    with pytest.raises(ValueError, match="cannot write checkpoints to .*ro: Read-only file system"):
        _trainer(tmp_path / "ro", epochs=1)


def test_nearly_full_disk_fails_before_training(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(C.shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 5000, 5000))
    with pytest.raises(ValueError, match=r"has 5,000 bytes free, but this run's checkpoints need about"):
        _trainer(tmp_path / "full", epochs=1)
    assert shutil.disk_usage is C.shutil.disk_usage


class _NanGrad(torch.autograd.Function):
    """Identity forward, NaN gradient: a finite loss whose backward blows up."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


@pytest.mark.parametrize("poison", ["nan_input", "inf_input", "nan_gradient"])
def test_non_finite_training_stops_at_its_step_and_keeps_checkpoints(tmp_path, poison, caplog):
    out = tmp_path / poison
    trainer = _trainer(out, epochs=3, checkpoint_every=2)
    # 6 steps an epoch: poison the 3rd batch of epoch 2 (step 9), or its last (step 12) for the
    # gradient case, where an unchecked step would poison the end-of-epoch checkpoints.
    bad_step = 12 if poison == "nan_gradient" else 9
    snapshot = {}
    step = trainer.task.step

    def poisoned(model, batch):
        if model.training and trainer.state["step"] + 1 == bad_step:
            snapshot.update({n: (out / n).read_bytes() for n in ("best.ckpt", "last.ckpt")})
            x, y = batch
            if poison == "nan_gradient":
                loss, totals = step(model, batch)
                return _NanGrad.apply(loss), totals
            x = x.clone()
            x[0, 0, -1] = float("nan") if poison == "nan_input" else float("inf")
            return step(model, (x, y))
        return step(model, batch)

    trainer.task.step = poisoned
    with caplog.at_level("ERROR", logger="torchtcn.train"):
        result = trainer.fit()
    kind = "gradient" if poison == "nan_gradient" else "training loss"
    where = f"at step {bad_step} (epoch 2, batch {bad_step - 6})"
    assert not result.complete and f"non-finite {kind}" in result.stop_reason and where in result.stop_reason
    assert where in caplog.text
    assert snapshot, "the poisoned step never ran"
    for name, before in snapshot.items():
        assert (out / name).read_bytes() == before, f"{name} was overwritten after the failure"
    last = C.load_checkpoint(out / "last.ckpt")
    assert all(torch.isfinite(v).all() for v in last.model.state_dict().values())
    assert result.epochs == 1 and result.best_epoch == 1 and math.isfinite(result.test["mse"])
    assert all(torch.isfinite(v).all() for v in trainer.model.state_dict().values())


def test_divergence_through_the_cli_exits_non_zero_naming_the_step(tmp_path):
    proc = _cli(["train", "adding200", "--epochs", "2", "--quiet", "--no-tensorboard", "--device", "cpu",
                 *(f"{k}={v}" for k, v in TINY.items()), "optimizer=sgd", "lr=1e30"], tmp_path / "div")
    assert proc.returncode == 1
    assert "non-finite training loss (inf) at step 2 (epoch 1, batch 2)" in proc.stdout + proc.stderr
    assert not (tmp_path / "div" / "best.ckpt").exists()
