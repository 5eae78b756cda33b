"""Distributed data parallel: 2 CPU processes (gloo) equal one process on the same global batch.

Two levels: the helpers in :mod:`torchtcn.distributed` driven by a hand-written loop (sharding,
loss weighting with unequal shards, DDP, metric reduction), and the real ``torchtcn train``
command launched by ``torchrun`` against the same command run as one process.
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

import torchtcn
from torchtcn import distributed as D

# --------------------------------------------------------------------------- context, no processes


def test_single_process_context_is_a_no_op():
    ctx = D.context_from_env({}, device="cpu")
    assert (ctx.rank, ctx.world_size, ctx.enabled, ctx.is_main, ctx.backend) == (0, 1, False, True, None)
    batch = torch.arange(7)
    assert D.shard(batch, ctx) is batch
    assert D.loss_weight(7, 7, ctx) == 1.0
    model = torch.nn.Linear(2, 2)
    assert D.wrap_model(model, ctx) is model and D.unwrap(model) is model


def test_context_from_torchrun_variables():
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"}
    ctx = D.context_from_env(env, device="cpu")
    assert (ctx.rank, ctx.world_size, ctx.local_rank, ctx.backend) == (3, 4, 1, "gloo")
    assert not ctx.is_main
    cuda = D.context_from_env(env, device="cuda")
    assert cuda.backend == "nccl" and cuda.device == torch.device("cuda", 1)

def test_a_named_gpu_under_torchrun(monkeypatch):
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "10.0.0.1",
           "MASTER_PORT": "29500"}
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    # four processes on a node seeing two GPUs: cuda:0 would be every one's (NCCL's
    # "Duplicate GPU detected" at the first collective)
    with pytest.raises(ValueError, match="--device cuda:0 names one GPU for all 4 processes"):
        D.context_from_env(env, device="cuda:0")
    # one process per node, or one visible GPU per process, may name its GPU
    assert D.context_from_env({**env, "LOCAL_WORLD_SIZE": "1"}, device="cuda:0").device == \
        torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match="names one GPU"):  # one GPU shared by 4 processes
        D.context_from_env(env, device="cuda:0")
    visible = {**env, "CUDA_VISIBLE_DEVICES": "3"}  # this process's own GPU
    assert D.context_from_env(visible, device="cuda:0").device == torch.device("cuda", 0)
    assert D.context_from_env({}, device="cuda:1").device == torch.device("cuda", 1)


@pytest.mark.parametrize(
    "env, match",
    [
        ({"WORLD_SIZE": "two"}, "WORLD_SIZE must be an integer, found 'two'"),
        ({"WORLD_SIZE": "2", "RANK": "2", "MASTER_ADDR": "a", "MASTER_PORT": "1"}, "RANK must be < WORLD_SIZE"),
        ({"WORLD_SIZE": "2", "RANK": "0"}, "MASTER_ADDR.*launch with torchrun"),
        ({"WORLD_SIZE": "0"}, "WORLD_SIZE must be >= 1"),
        ({"RANK": "-1"}, "RANK must be >= 0"),
    ],
)
def test_inconsistent_environment(env, match):
    with pytest.raises(ValueError, match=match):
        D.context_from_env(env, device="cpu")


def test_shards_partition_every_batch_in_order():
    batch = torch.arange(11)
    for world in (1, 2, 3, 4):
        parts = [D.shard(batch, D.DistributedContext(rank=r, world_size=world)) for r in range(world)]
        assert torch.equal(torch.cat(parts), batch)
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
        weights = [D.loss_weight(len(p), len(batch), D.DistributedContext(r, world)) for r, p in enumerate(parts)]
        assert sum(weights) == pytest.approx(world)


def test_batch_smaller_than_world_is_refused():
    with pytest.raises(ValueError, match=r"global batch size \(2\) must be >= the number of processes \(3\)"):
        D.check_batch_size(2, D.DistributedContext(rank=0, world_size=3))


# --------------------------------------------------------------------------- helpers under gloo


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


BATCH = 5  # odd on purpose: shards of 3 and 2 test the loss weighting
STEPS = 4


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4 * BATCH, 2, 12, generator=g)
    y = torch.randn(4 * BATCH, 1, generator=g)
    return x, y


def _model():
    torch.manual_seed(0)
    body = torchtcn.TCN(2, [4, 4], kernel_size=3, norm="weight")
    return torchtcn.SequenceModel(body, "last_step", 1)


def _train(ctx) -> tuple[list[float], dict]:
    """A hand-written loop using only the public helpers; returns global losses and weights."""
    model = D.wrap_model(_model(), ctx)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = _data()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))
    losses = []
    for step in range(STEPS):
        idx = D.shard(order[step * BATCH : (step + 1) * BATCH], ctx)
        loss = torch.nn.functional.mse_loss(model(x[idx]), y[idx])
        opt.zero_grad()
        (loss * D.loss_weight(len(idx), BATCH, ctx)).backward()
        opt.step()
        total = D.all_reduce_sum(torch.tensor([loss.item() * len(idx)], dtype=torch.float64), ctx)
        losses.append(total.item() / BATCH)
    return losses, {k: v.detach().clone() for k, v in D.unwrap(model).state_dict().items()}


def _worker(rank: int, world: int, port: int, out: str) -> None:
    env = {"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    os.environ.update(env)
    torch.set_num_threads(1)
    ctx = D.setup("cpu", timeout_s=120)
    assert ctx.world_size == world and ctx.backend == "gloo"
    losses, weights = _train(ctx)
    flags = [D.any_true(ctx.rank == 1, ctx), D.any_true(False, ctx), D.agree(5, ctx), D.agree(ctx.rank, ctx)]
    # per-step seeds: different random draws (dropout masks) on each rank, reproducible per step
    D.seed_step(1111, 5, ctx)
    draw = torch.rand(3).tolist()
    D.seed_step(1111, 5, ctx)
    flags += [D.agree(draw, ctx), draw == torch.rand(3).tolist()]
    token = D.broadcast_object({"from": ctx.rank}, ctx)
    if ctx.is_main:
        torch.save({"losses": losses, "weights": weights, "flags": flags, "token": token}, out)
    D.cleanup(ctx)


def _spawn_two(worker, args, written: list[str]) -> None:
    """Run ``worker(rank, *args)`` in two spawned processes.

    torch's gloo teardown now and then aborts a process after its work is done (SIGABRT,
    "terminate called without an active exception", seen about once in ten full-suite runs).
    Such an exit is tolerated only when every file the workers write last (``written``, before
    they leave the process group) is there: a crash before the work is done still fails.
    """
    try:
        mp.start_processes(worker, args=args, nprocs=2, join=True, start_method="spawn")
    except mp.ProcessExitedException as e:
        if e.signal_name != "SIGABRT" or not all(os.path.exists(p) for p in written):
            raise


def test_two_gloo_processes_equal_one_process(tmp_path):
    out = str(tmp_path / "ddp.pt")
    _spawn_two(_worker, (2, free_port(), out), [out])
    ddp = torch.load(out)
    losses, weights = _train(D.DistributedContext())
    assert ddp["flags"] == [True, False, True, False, False, True] and ddp["token"] == {"from": 0}
    assert len(ddp["losses"]) == STEPS and ddp["losses"][0] != ddp["losses"][-1]
    torch.testing.assert_close(torch.tensor(ddp["losses"]), torch.tensor(losses), rtol=1e-5, atol=1e-6)
    for k, v in weights.items():
        torch.testing.assert_close(ddp["weights"][k], v, rtol=1e-5, atol=1e-6, msg=k)
    # the weights really moved, so the equality above is not the trivial one
    assert any(not torch.equal(v, w) for v, w in zip(weights.values(), _model().state_dict().values()))


# --------------------------------------------------------------------------- torchtcn train under torchrun

# 64 examples in batches of 9: shards of 5 and 4, and an epoch's last batch of 1 example, which
# leaves rank 1 with nothing (it must still join the all-reduce, with zero weight). With a
# weight average (ema), so both the raw weights (last.ckpt) and the average (model.safetensors)
# must come out the same.
TRAIN_ARGS = ["train", "adding200", "--model", "tcn", "--epochs", "2", "--quiet", "--no-tensorboard",
              "--device", "cpu", "n_train=64", "n_valid=30", "n_test=30", "T=12", "channels=8,8",
              "kernel_size=3", "batch_size=9", "eval_batch_size=7", "ema=0.9"]


def _run_record(out):
    import json

    from safetensors.torch import load_file

    from torchtcn.checkpoint import load_checkpoint

    record = json.loads((out / "adding200-tcn.json").read_text())
    raw = load_checkpoint(out / "last.ckpt").model.state_dict()
    return record, {**load_file(str(out / "model.safetensors")), **{f"raw.{k}": v for k, v in raw.items()}}


def _torchrun(args, env, *launcher, timeout=240, expect_ok=True, gloo_retries=0):
    """Run ``torchrun --standalone --nproc_per_node 2``; returns the finished process.

    ``expect_ok``: the exit status must be 0 (else it must not be). ``gloo_retries``: on a
    loaded 2-core machine gloo can fail to connect at start-up ("connectFullMesh ... Connection
    refused"), an infrastructure failure that says nothing about training; the same command is
    then launched again (only for launches that are safe to repeat: ``--resume`` ones).
    """
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           *launcher, *args]
    for attempt in range(gloo_retries + 1):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        flaky = "connectFullMesh" in proc.stdout + proc.stderr
        if not flaky or attempt == gloo_retries:
            break
    tail = proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (proc.returncode == 0) == expect_ok, tail
    return proc


# Rank 0 SIGKILLs itself once, right after a mid-epoch checkpoint of epoch 2, as a crashed node
# would. torchrun (no restarts) stops the other rank and fails; the same command launched again
# resumes from the checkpoint. The relaunch is what torchrun's --max-restarts does in place; we
# relaunch ourselves because its in-place restart hung in gloo's rendezvous for minutes on a
# loaded 2-core CI machine (torch's machinery, not ours), while a fresh launch does not.
DIE_ONCE = """
import os, signal, sys
from pathlib import Path
from torchtcn import train

marker, args = Path(sys.argv[1]), sys.argv[2:]
save = train.Trainer.save_checkpoint

def save_then_die(self, name):
    save(self, name)
    if (self.is_main and name == "last" and self.state["epoch"] == 1
            and self.state["step_in_epoch"] > 0 and not marker.exists()):
        marker.write_text(str(self.state["step"]))
        os.kill(os.getpid(), signal.SIGKILL)

train.Trainer.save_checkpoint = save_then_die
from torchtcn.cli import main
sys.exit(main(args))
"""


def test_torchtcn_train_under_torchrun_equals_one_process(tmp_path):
    """Also after rank 0 is SIGKILLed mid-epoch and the job is launched again with --resume."""
    ddp_out, restarted_out, single_out = tmp_path / "ddp", tmp_path / "restarted", tmp_path / "single"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = _torchrun([*TRAIN_ARGS, "--out", str(ddp_out)], env, "-m", "torchtcn.cli")
    # rank 0 alone logs and writes: one "distributed:" line, one result line
    assert proc.stdout.count("adding200 / tcn: test mse") == 1, proc.stdout
    assert (proc.stderr + proc.stdout).count("distributed: 2 processes, backend gloo") == 1

    script, marker = tmp_path / "die_once.py", tmp_path / "died_at_step"
    script.write_text(DIE_ONCE)
    launch = [str(marker), *TRAIN_ARGS, "--out", str(restarted_out), "--checkpoint-every", "3", "--resume"]
    killed = _torchrun(launch, env, str(script), expect_ok=False)
    assert marker.read_text() == "9", killed.stderr[-3000:]  # died after the checkpoint of step 9
    assert not (restarted_out / "adding200-tcn.json").exists()
    proc = _torchrun(launch, env, str(script), gloo_retries=2)
    assert f"resumed from {restarted_out / 'last.ckpt'}" in proc.stderr + proc.stdout

    from torchtcn.cli import main

    assert main([*TRAIN_ARGS, "--out", str(single_out)]) == 0
    one, one_w = _run_record(single_out)
    for out in (ddp_out, restarted_out):
        ddp, ddp_w = _run_record(out)
        assert ddp["steps"] == one["steps"] == 2 * 8 and ddp["complete"] and one["complete"]
        for a, b in zip(ddp["history"], one["history"], strict=True):
            for key in ("train_loss", "valid_loss", "test_loss"):
                assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7), (out.name, key)
        assert ddp["value"] == pytest.approx(one["value"], rel=1e-5)
        assert ddp_w.keys() == one_w.keys()
        for k in one_w:
            torch.testing.assert_close(ddp_w[k], one_w[k], rtol=1e-5, atol=1e-6, msg=f"{out.name}: {k}")
    # the runs really trained (so equal results are not equal initial weights)
    assert one["history"][1]["train_loss"] < one["history"][0]["train_loss"]
    # and the saved average is not the raw weights under another name
    assert any(not torch.equal(v, one_w[f"raw.{k}"]) for k, v in one_w.items() if not k.startswith("raw."))


TINY_RUN = {"n_train": "16", "n_valid": "8", "n_test": "8", "T": "5", "channels": "4", "kernel_size": "3"}


def _join_cpu_group(rank: int, world: int, port: int) -> D.DistributedContext:
    """In a spawned worker: join a gloo group of ``world`` processes as torchrun would."""
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    return D.setup("cpu", timeout_s=60)


def _agreement_worker(rank: int, world: int, port: int, outs: list, report: str) -> None:
    import json

    from torchtcn.tasks import build_run
    from torchtcn.train import Trainer

    ctx = _join_cpu_group(rank, world, port)
    out = {}
    # 1. only rank 1 reaches a limit (as with time_limit on a slower clock) at its 3rd step:
    #    both stop there, instead of rank 0 waiting in the next all-reduce forever
    run = build_run("adding200", "tcn", TINY_RUN, epochs=2, batch_size=2)
    trainer = Trainer(run.task, run.model, run.datasets, run.spec.train, None, ctx=ctx, quiet=True)
    if rank == 1:
        trainer._stop_reason = lambda started: "fake limit" if trainer.state["step"] >= 3 else None
    result = trainer.fit()
    out["limit"] = [result.steps, result.complete, result.stop_reason]
    # 2. rank 0 finds last.ckpt, rank 1 does not (a node-local disk): both refuse to resume
    run = build_run("adding200", "tcn", TINY_RUN, epochs=1)
    trainer = Trainer(run.task, run.model, run.datasets, run.spec.train, outs[rank],
                      run_info=run.spec.to_dict(), ctx=ctx, quiet=True, use_tensorboard=False)
    try:
        trainer.fit(resume=True)
        out["resume"] = "no error"
    except ValueError as e:
        out["resume"] = str(e)
    # 3. a run folder only rank 0 can check (it writes the files): both refuse, neither trains
    try:
        Trainer(run.task, run.model, run.datasets, run.spec.train,
                os.path.join(outs[0], "last.ckpt", "below"), ctx=ctx, quiet=True)
        out["unwritable"] = "no error"
    except ValueError as e:
        out["unwritable"] = str(e)
    with open(f"{report}.{rank}", "w") as f:
        json.dump(out, f)
    D.cleanup(ctx)


def test_processes_agree_on_stopping_and_on_the_checkpoint_to_resume(tmp_path):
    import json

    from torchtcn.tasks import build_run
    from torchtcn.train import Trainer

    shared, local = tmp_path / "rank0", tmp_path / "rank1-local"
    run = build_run("adding200", "tcn", TINY_RUN, epochs=1)
    Trainer(run.task, run.model, run.datasets, run.spec.train, shared, run_info=run.spec.to_dict(),
            quiet=True, use_tensorboard=False).fit()
    report = str(tmp_path / "report")
    _spawn_two(_agreement_worker, (2, free_port(), [str(shared), str(local)], report),
               [f"{report}.{rank}" for rank in (0, 1)])
    reports = [json.loads(open(f"{report}.{rank}").read()) for rank in (0, 1)]
    for r in reports:  # rank 0, which writes the result, names the limit rank 1 hit
        assert r["limit"] == [3, False, "fake limit"]
    for rank, r in enumerate(reports):
        assert "last.ckpt exists for some processes and not for others" in r["resume"], (rank, r)
        assert r["unwritable"].startswith("cannot write checkpoints to "), (rank, r)


@pytest.mark.gpu
def test_nccl_two_gpus_equal_one_gpu(tmp_path):
    if torch.cuda.device_count() < 2:
        pytest.skip("NCCL needs one GPU per process: this test needs 2 CUDA devices")
    args = [a if a != "cpu" else "cuda" for a in TRAIN_ARGS]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = _torchrun([*args, "--out", str(tmp_path / "nccl")], env, "-m", "torchtcn.cli")
    assert "backend nccl" in proc.stdout + proc.stderr

    from torchtcn.cli import main

    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    (ddp, ddp_w), (one, one_w) = _run_record(tmp_path / "nccl"), _run_record(tmp_path / "one")
    for a, b in zip(ddp["history"], one["history"], strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
    for k in one_w:  # cuDNN picks algorithms per shape: looser than on CPU
        torch.testing.assert_close(ddp_w[k], one_w[k], rtol=1e-4, atol=1e-5, msg=k)


def _uneven_worker(rank: int, world: int, port: int, out_dir: str, report: str) -> None:
    import json

    from torchtcn.tasks import build_run
    from torchtcn.train import Trainer

    ctx = _join_cpu_group(rank, world, port)
    out = {}
    # 1. evaluation batches of one example: rank 1 holds none of them, and must still add up
    run = build_run("adding200", "tcn", TINY_RUN, epochs=1, eval_batch_size=1)
    out["valid"] = Trainer(run.task, run.model, run.datasets, run.spec.train, None, ctx=ctx,
                           quiet=True).evaluate("valid")
    # 2. a mid-epoch checkpoint, resumed and stopped before its first new step: only rank 0
    #    carries the stored epoch totals, and both must still take part in their sum
    for resume in (False, True):
        run = build_run("adding200", "tcn", TINY_RUN, epochs=2, batch_size=4, max_steps=3)
        result = Trainer(run.task, run.model, run.datasets, run.spec.train, out_dir,
                         run_info=run.spec.to_dict(), ctx=ctx, quiet=True,
                         use_tensorboard=False).fit(resume=resume)
    out["resumed"] = [result.steps, result.complete]
    with open(f"{report}.{rank}", "w") as f:
        json.dump(out, f)
    D.cleanup(ctx)


def test_processes_with_nothing_to_add_still_join_the_sums(tmp_path):
    import json

    from torchtcn.tasks import build_run
    from torchtcn.train import Trainer

    report = str(tmp_path / "report")
    _spawn_two(_uneven_worker, (2, free_port(), str(tmp_path / "run"), report),
               [f"{report}.{rank}" for rank in (0, 1)])
    reports = [json.loads(open(f"{report}.{rank}").read()) for rank in (0, 1)]
    run = build_run("adding200", "tcn", TINY_RUN, epochs=1, eval_batch_size=1)
    alone = Trainer(run.task, run.model, run.datasets, run.spec.train, None,
                    quiet=True).evaluate("valid")
    for r in reports:
        assert r["valid"] == pytest.approx(alone, rel=1e-6)
        assert r["resumed"] == [3, False]
