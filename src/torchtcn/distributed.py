"""Data-parallel training on ``torch.distributed``, launched by ``torchrun``.

The trainer stays one loop: it asks this module who it is (:func:`setup`), takes its share of
every global batch (:func:`shard`), weights its loss so that the averaged gradient equals the
gradient of the whole global batch (:func:`loss_weight`), wraps the model in
``DistributedDataParallel`` (:func:`wrap_model`), and lets only the main process log, draw
progress bars and write checkpoints (:attr:`DistributedContext.is_main`).

Every process draws the same global batch from the same seeded order, then keeps a contiguous
slice of it, so an N-process run computes the same updates as a single process on the same
global batch (up to float summation order). This is ``DistributedSampler``'s partitioning
applied per batch instead of per epoch, which is what keeps the global batch, and therefore
the results, independent of the number of processes.

Nothing here is home-made communication: process groups, all-reduce and gradient averaging
are ``torch.distributed`` and DDP. Backends: ``gloo`` on CPU, ``nccl`` on CUDA.

Example (single process: everything is a no-op)::

    >>> ctx = setup()
    >>> ctx.world_size, ctx.is_main
    (1, True)
    >>> shard(torch.arange(6), ctx).tolist()
    [0, 1, 2, 3, 4, 5]

Launch (see ``docs/distributed.md``)::

    torchrun --standalone --nproc_per_node 2 -m torchtcn.cli train adding --model tcn
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

logger = logging.getLogger(__name__)

#: Environment variables ``torchrun`` sets for every worker.
ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistributedContext:
    """Who this process is in the job. ``world_size == 1`` means plain single-process training.

    Attributes:
        rank: global index of this process, 0 .. world_size - 1.
        world_size: number of processes in the job (all nodes).
        local_rank: index of this process on its node (selects its GPU).
        backend: ``"gloo"``, ``"nccl"``, or None when not distributed.
        device: the device this process trains on.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        """True when more than one process trains together."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """The one process that logs, shows progress and writes checkpoints."""
        return self.rank == 0


def _env_int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, found {raw!r}") from None
    if value < 0:
        raise ValueError(f"environment variable {name} must be >= 0, found {value}")
    return value


def context_from_env(
    environ: Mapping[str, str] | None = None, device: str | torch.device | None = None
) -> DistributedContext:
    """Read the job layout that ``torchrun`` exports, without starting anything.

    Args:
        environ: the environment (default ``os.environ``).
        device: ``"cpu"``, ``"cuda"`` or None (CUDA when available). Under CUDA each process
            takes ``cuda:LOCAL_RANK``.

    Raises:
        ValueError: inconsistent variables (e.g. ``RANK >= WORLD_SIZE``, or a multi-process
            job without ``MASTER_ADDR``/``MASTER_PORT``).
    """
    env = os.environ if environ is None else environ
    world = _env_int(env, "WORLD_SIZE", 1)
    rank = _env_int(env, "RANK", 0)
    local = _env_int(env, "LOCAL_RANK", 0)
    if world < 1:
        raise ValueError(f"WORLD_SIZE must be >= 1, found {world}")
    if rank >= world:
        raise ValueError(f"RANK must be < WORLD_SIZE ({world}), found {rank}")
    if world > 1:
        missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if not env.get(v)]
        if missing:
            raise ValueError(
                f"WORLD_SIZE={world} but {missing} not set: launch with torchrun, which sets them"
            )
    dev = torch.device(device) if device is not None else None
    if dev is None:
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda":
        local_world = _env_int(env, "LOCAL_WORLD_SIZE", world)
        # several processes of this node: one named GPU would be every local rank's (NCCL:
        # "Duplicate GPU detected"). One process per node, or one GPU made visible to each
        # process (CUDA_VISIBLE_DEVICES), may name its GPU.
        one_visible_each = torch.cuda.device_count() == 1 and bool(env.get("CUDA_VISIBLE_DEVICES"))
        if dev.index is not None and local_world > 1 and not one_visible_each:
            raise ValueError(f"--device {device} names one GPU for all {local_world} processes "
                             "of this node: under torchrun give --device cuda (each rank takes "
                             "cuda:LOCAL_RANK)")
        if dev.index is None:
            dev = torch.device("cuda", local if world > 1 else 0)
        backend = "nccl"
    else:
        backend = "gloo"
    return DistributedContext(
        rank=rank,
        world_size=world,
        local_rank=local,
        backend=backend if world > 1 else None,
        device=dev,
    )


def setup(device: str | torch.device | None = None, *, timeout_s: float = 600.0) -> DistributedContext:
    """Join the process group ``torchrun`` describes (no-op for a single process).

    Initialises ``torch.distributed`` with ``gloo`` (CPU) or ``nccl`` (CUDA) from the
    ``env://`` variables (under torchrun this reuses the launcher's store), pins the CUDA
    device to ``LOCAL_RANK``, and silences INFO logging on every process but rank 0 (warnings
    and errors still show on every process).

    Args:
        device: ``"cpu"``, ``"cuda"`` or None (CUDA when available).
        timeout_s: how long a collective may wait for the other processes.

    Returns:
        The :class:`DistributedContext` of this process.

    Raises:
        ValueError: inconsistent torchrun variables, or CUDA asked for but not available.
    """
    ctx = context_from_env(None, device)
    if not ctx.enabled:
        return ctx
    if ctx.device.type == "cuda":
        if not torch.cuda.is_available() or ctx.device.index >= torch.cuda.device_count():
            raise ValueError(
                f"process {ctx.rank} wants {ctx.device} but this node has "
                f"{torch.cuda.device_count()} CUDA devices: use --nproc_per_node <= GPUs per node, "
                "or --device cpu"
            )
        torch.cuda.set_device(ctx.device)
    if not dist.is_initialized():
        dist.init_process_group(
            backend=ctx.backend,
            init_method="env://",
            rank=ctx.rank,
            world_size=ctx.world_size,
            timeout=datetime.timedelta(seconds=timeout_s),
        )
    if not ctx.is_main:
        logging.getLogger("torchtcn").setLevel(logging.WARNING)
    logger.info(
        "distributed: %d processes, backend %s, this is rank %d on %s",
        ctx.world_size, ctx.backend, ctx.rank, ctx.device,
    )
    return ctx


def cleanup(ctx: DistributedContext, *, wait_for_others: bool = True) -> None:
    """Leave the process group, after a final barrier so no rank exits mid-collective.

    ``wait_for_others=False`` skips the barrier: after an error the other processes may be
    gone, and a barrier would only bury the real error under "connection closed by peer".
    """
    if ctx.enabled and dist.is_initialized():
        if wait_for_others:
            dist.barrier()
        dist.destroy_process_group()


def barrier(ctx: DistributedContext) -> None:
    """Wait for every process (no-op for one)."""
    if ctx.enabled:
        dist.barrier()


def check_batch_size(batch_size: int, ctx: DistributedContext) -> None:
    """Every process needs at least one example of every global batch.

    Raises:
        ValueError: ``batch_size < world_size``.
    """
    if ctx.enabled and batch_size < ctx.world_size:
        raise ValueError(
            f"the global batch size ({batch_size}) must be >= the number of processes "
            f"({ctx.world_size}): every process needs at least one example per batch"
        )


def shard(batch: torch.Tensor, ctx: DistributedContext, dim: int = 0) -> torch.Tensor:
    """This process's contiguous part of a global batch (sizes differ by at most one).

    Args:
        batch: any tensor whose ``dim`` indexes examples (indices, inputs, targets...).
        ctx: this process.

    Returns:
        ``torch.tensor_split(batch, world_size, dim)[rank]`` (the whole batch for one process).

    Example:
        >>> ctx = DistributedContext(rank=1, world_size=2)
        >>> shard(torch.arange(5), ctx).tolist()
        [3, 4]
    """
    if not ctx.enabled:
        return batch
    return torch.tensor_split(batch, ctx.world_size, dim=dim)[ctx.rank]


def loss_weight(local_count: int, global_count: int, ctx: DistributedContext) -> float:
    """Factor for this process's *mean* loss so DDP's gradient average is the global mean's.

    DDP averages gradients over processes; with shards of unequal size that average is not the
    gradient of the global batch's mean loss. Scaling each local mean by
    ``world_size * local_count / global_count`` makes it exact:
    ``(1/W) sum_r W n_r/N grad(mean_r) = grad((1/N) sum_all loss)``.

    Example:
        >>> loss_weight(3, 5, DistributedContext(rank=0, world_size=2))
        1.2
    """
    if not ctx.enabled:
        return 1.0
    if global_count <= 0:
        raise ValueError(f"global_count must be > 0, found {global_count}")
    return ctx.world_size * local_count / global_count


def all_reduce_sum(values: torch.Tensor, ctx: DistributedContext) -> torch.Tensor:
    """Sum ``values`` over processes (in place, returned). Used for metric totals."""
    if ctx.enabled:
        moved = values.to(ctx.device) if ctx.backend == "nccl" else values
        dist.all_reduce(moved, op=dist.ReduceOp.SUM)
        if moved is not values:
            values.copy_(moved)
    return values


def global_count(local_count: int, ctx: DistributedContext) -> int:
    """Total of an integer over all processes (e.g. loss elements of a global batch)."""
    if not ctx.enabled:
        return int(local_count)
    t = torch.tensor([float(local_count)], dtype=torch.float64)
    return int(all_reduce_sum(t, ctx).item())


def broadcast_object(obj, ctx: DistributedContext, src: int = 0):
    """``obj`` from process ``src`` on every process (e.g. a decision made by rank 0)."""
    if not ctx.enabled:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src, device=ctx.device if ctx.backend == "nccl" else None)
    return holder[0]


def gather_objects(obj, ctx: DistributedContext) -> list:
    """Every process's ``obj``, in rank order, on every process."""
    if not ctx.enabled:
        return [obj]
    out = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def any_true(flag: bool, ctx: DistributedContext) -> bool:
    """True on every process when ``flag`` is true on any (e.g. a NaN loss on one rank)."""
    if not ctx.enabled:
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], dtype=torch.float64)
    return bool(all_reduce_sum(t, ctx).item() > 0)


def agree(value, ctx: DistributedContext) -> bool:
    """True on every process when every process holds rank 0's ``value``, False on all otherwise.

    For decisions each process makes from its own view of the world, e.g. whether a shared
    checkpoint exists: a disagreement must stop every process, not only the odd one out.
    """
    if not ctx.enabled:
        return True
    return not any_true(broadcast_object(value, ctx) != value, ctx)


def check_on_main(check, ctx: DistributedContext) -> None:
    """Run ``check()`` on the main process and raise its ``ValueError`` on every process.

    For start-up checks only rank 0 can make (it alone writes files): the other ranks would
    otherwise go on into training and die in a collective once rank 0 has left.

    Example:
        >>> check_on_main(lambda: None, DistributedContext())  # passes: nothing raised
    """
    error = None
    if ctx.is_main:
        try:
            check()
        except ValueError as e:
            error = str(e)
    error = broadcast_object(error, ctx)
    if error is not None:
        raise ValueError(error)


def seed_step(seed: int, step: int, ctx: DistributedContext) -> None:
    """Seed torch (CPU and CUDA) from ``(seed, step, rank)`` before a training step.

    Every process starts from the same seed (so the initial weights agree); left alone, they
    would then draw the *same* dropout masks for their different slices of the batch, which
    correlates the noise dropout is meant to add. Seeding each step from the rank decorrelates
    the processes, and since it depends only on the step, a resumed run draws exactly what an
    uninterrupted one would. No-op for a single process (its RNG stream is left untouched).

    Example:
        >>> seed_step(1111, 0, DistributedContext())  # one process: nothing happens
    """
    if not ctx.enabled:
        return
    digest = hashlib.sha256(f"torchtcn:{seed}:{step}:{ctx.rank}".encode()).digest()
    torch.manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def wrap_model(model: nn.Module, ctx: DistributedContext) -> nn.Module:
    """``DistributedDataParallel(model)`` for a multi-process job, ``model`` otherwise.

    On CUDA, batch-norm layers become ``SyncBatchNorm`` so batch statistics cover the global
    batch. On CPU (gloo) PyTorch has no synchronised batch norm: each process normalises with
    its own shard's statistics, so a batch-norm model is close to but not equal to
    single-process training (a warning says so). Weight norm, layer norm and no norm are exact.
    """
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    if has_bn and ctx.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    elif has_bn:
        logger.warning(
            "batch norm under gloo/CPU uses per-process batch statistics; results will differ "
            "slightly from single-process training (use weight or layer norm for exact equality)"
        )
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The user's model inside a DDP wrapper (for saving, evaluation and metrics)."""
    from torch.nn.parallel import DistributedDataParallel

    return model.module if isinstance(model, DistributedDataParallel) else model
