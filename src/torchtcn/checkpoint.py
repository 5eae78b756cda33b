"""Training checkpoints: one safetensors file, tensors as tensors and everything else as JSON.

A checkpoint holds what is needed to continue a run exactly where it stopped: the model
(architecture spec + weights), the optimizer (its tensors and its param groups), the
learning-rate scheduler, the RNG states of torch (CPU and CUDA), numpy and Python, and the
trainer's own state (epoch, step, best metric, history, configuration).

Nothing is pickled. The tensors are stored as safetensors; the rest is one JSON document in
the safetensors header metadata under ``"torchtcn_checkpoint"``. A write goes to a temporary
file in the same folder, is fsynced and then renamed over the destination (``os.replace`` is
atomic on POSIX), so a crash mid-write leaves the previous checkpoint intact.

Example:
    >>> import tempfile, os, torch, torchtcn
    >>> model = torchtcn.TCN(1, [4, 4], kernel_size=3)
    >>> opt = torch.optim.Adam(model.parameters())
    >>> path = os.path.join(tempfile.mkdtemp(), "last.ckpt")
    >>> save_checkpoint(path, model, opt, trainer_state={"epoch": 3})
    >>> ckpt = load_checkpoint(path)
    >>> ckpt.trainer_state["epoch"], type(ckpt.model).__name__
    (3, 'TCN')
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save as save_bytes

from .digest import add_digest, check_digest
from .io import _read_header
from .registry import model_from_spec, model_spec

CHECKPOINT_KEY = "torchtcn_checkpoint"
CHECKPOINT_VERSION = 1
_MODEL, _AVERAGED, _OPTIM, _RNG = "model.", "averaged.", "optimizer.", "rng."


@dataclass
class Checkpoint:
    """A loaded checkpoint.

    Attributes:
        model: the rebuilt model with its weights (on the requested device, train mode).
        trainer_state: the trainer's JSON state (epoch, step, best metric, history, config...).
        optimizer_state: a ``torch.optim.Optimizer.state_dict()``-shaped dict, or None.
        scheduler_state: the scheduler's ``state_dict()``, or None.
        rng: ``{"tensors": {...}, "meta": {...}}`` for :func:`set_rng_state`.
        path: where it was read from.
        averaged: the same architecture with the run's weight average (``ema=...``), or None.
    """

    model: torch.nn.Module
    trainer_state: dict[str, Any]
    optimizer_state: dict[str, Any] | None
    scheduler_state: dict[str, Any] | None
    rng: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    averaged: torch.nn.Module | None = None

    @property
    def inference_model(self) -> torch.nn.Module:
        """The weights the run validated and saved: the average when there is one."""
        return self.averaged if self.averaged is not None else self.model


# --------------------------------------------------------------------------- RNG


def get_rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The RNG states of torch (CPU, every CUDA device), numpy and Python.

    Returns:
        ``(tensors, meta)``: the byte/word arrays as tensors, the scalars as JSON values.
    """
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    tensors["numpy"] = torch.from_numpy(keys.astype(np.int64))
    version, internal, gauss_next = random.getstate()
    meta = {
        "numpy": {"kind": kind, "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": version, "state": list(internal), "gauss_next": gauss_next},
    }
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` captured (CUDA states only when CUDA is present)."""
    torch.set_rng_state(tensors["torch"].to(torch.uint8).cpu())
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("cuda.")),
                                       key=lambda k: int(k.split(".")[1]))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([c.to(torch.uint8).cpu() for c in cuda[: torch.cuda.device_count()]])
    n = meta["numpy"]
    np.random.set_state(
        (n["kind"], tensors["numpy"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    p = meta["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))


# --------------------------------------------------------------------------- optimizer


def _split_optimizer(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, dict[str, Any]] = {}
    for pid, entries in state_dict["state"].items():
        plain[str(pid)] = {}
        for k, v in entries.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{pid}.{k}"] = v
            else:
                plain[str(pid)][k] = v
    return tensors, {"state": plain, "param_groups": state_dict["param_groups"]}


def _join_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict:
    state: dict[int, dict[str, Any]] = {int(pid): dict(v) for pid, v in meta["state"].items()}
    for key, t in tensors.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = t
    return {"state": state, "param_groups": meta["param_groups"]}


# --------------------------------------------------------------------------- model


def _model_tensors(model: torch.nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """State-dict tensors, each shared tensor stored once; ``aliases`` maps the other names."""
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for name, t in model.state_dict().items():
        key = (t.data_ptr(), t.dtype, tuple(t.shape), t.stride()) if t.numel() else None
        if key is not None and key in seen:
            aliases[name] = seen[key]
            continue
        if key is not None:
            seen[key] = name
        tensors[name] = t.detach().contiguous()
    return tensors, aliases


# --------------------------------------------------------------------------- save / load


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not every platform can open a directory
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a fsynced temporary file and ``os.replace``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def estimate_checkpoint_bytes(model: torch.nn.Module, optimizer_slots: int = 2,
                              averaged: bool = False) -> int:
    """Upper estimate of a checkpoint's size: the model's tensors (twice with a weight
    average) plus ``optimizer_slots`` tensors per parameter (Adam keeps two moments, SGD
    with momentum one), plus headroom."""
    model_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    return (2 if averaged else 1) * model_bytes + optimizer_slots * param_bytes + (1 << 20)


def check_output_dir(folder, need_bytes: int = 0, what: str = "checkpoints") -> None:
    """Fail at start-up, not after hours of training, when checkpoints cannot be written.

    Creates ``folder``, writes, fsyncs and removes a probe file there, and checks that the file
    system has ``need_bytes`` free. ``what`` names the files meant for it in the message.

    Raises:
        ValueError: ``folder`` cannot be created or written (not a directory, permission
            denied, read-only or full file system), or has less than ``need_bytes`` free; the
            message names the folder and the cause.

    Example:
        >>> import tempfile
        >>> check_output_dir(tempfile.mkdtemp(), need_bytes=1024)
    """
    folder = Path(folder)
    probe = folder / f".write-probe-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        try:
            with open(probe, "wb") as f:
                f.write(b"\0" * 4096)
                f.flush()
                os.fsync(f.fileno())
        finally:
            if probe.exists():
                probe.unlink()
    except OSError as e:
        raise ValueError(f"cannot write {what} to {folder}: {e.strerror or e}") from None
    free = shutil.disk_usage(folder).free
    if free < need_bytes:
        raise ValueError(
            f"{folder} has {free:,} bytes free, but this run's {what} need about "
            f"{need_bytes:,}: free some space or choose another output folder"
        )


def save_checkpoint(
    path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    *,
    trainer_state: dict[str, Any] | None = None,
    rng: bool = True,
    averaged: torch.nn.Module | None = None,
) -> None:
    """Write a checkpoint to ``path`` atomically.

    Args:
        path: destination file (conventionally ``last.ckpt`` / ``best.ckpt``).
        model: a registered torchtcn model (its spec is stored so it can be rebuilt).
        optimizer, scheduler: saved when given (``state_dict()``; the scheduler's must be JSON).
        trainer_state: JSON-serialisable trainer state (epoch, step, best metric, config, ...).
        rng: also capture the torch/numpy/Python RNG states.
        averaged: a copy of ``model`` holding a weight average (:class:`torchtcn.averaging.WeightEMA`).

    Raises:
        TypeError: ``trainer_state`` or the scheduler state is not JSON-serialisable.
        ValueError: ``averaged`` has other state-dict keys or shapes than ``model``.
    """
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    model_t, aliases = _model_tensors(model)
    tensors.update({_MODEL + k: v for k, v in model_t.items()})
    averaged_aliases = None
    if averaged is not None:
        avg_t, averaged_aliases = _model_tensors(averaged)
        shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        if {k: tuple(v.shape) for k, v in averaged.state_dict().items()} != shapes:
            raise ValueError("averaged must be a copy of model (same state-dict keys and shapes)")
        tensors.update({_AVERAGED + k: v for k, v in avg_t.items()})
    doc: dict[str, Any] = {
        "version": CHECKPOINT_VERSION,
        "model": model_spec(model),
        "model_aliases": aliases,
        "averaged_aliases": averaged_aliases,
        "trainer": trainer_state or {},
        "optimizer": None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "rng": None,
    }
    if optimizer is not None:
        opt_t, opt_meta = _split_optimizer(optimizer.state_dict())
        tensors.update({_OPTIM + k: v.detach().contiguous() for k, v in opt_t.items()})
        doc["optimizer"] = opt_meta
    if rng:
        rng_t, rng_meta = get_rng_state()
        tensors.update({_RNG + k: v.contiguous() for k, v in rng_t.items()})
        doc["rng"] = rng_meta
    try:
        text = json.dumps(doc)
    except TypeError as e:
        raise TypeError(f"checkpoint state must be JSON-serialisable: {e}") from None
    cpu = {k: v.cpu() for k, v in tensors.items()}
    atomic_write_bytes(path, add_digest(save_bytes(cpu, metadata={CHECKPOINT_KEY: text})))


def read_checkpoint_state(path) -> dict[str, Any]:
    """The JSON document of a checkpoint (no tensors read): ``model``, ``trainer``, ...

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: not a torchtcn checkpoint, or its header is corrupted.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a directory, expected a checkpoint file (e.g. {path}/best.ckpt)")
    header = _read_header(path)
    meta = header.get("__metadata__")
    if not isinstance(meta, dict) or CHECKPOINT_KEY not in meta:
        raise ValueError(f"{path} is not a torchtcn checkpoint (no {CHECKPOINT_KEY!r} in its header)")
    try:
        doc = json.loads(meta[CHECKPOINT_KEY])
    except (TypeError, json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"{path}: corrupted checkpoint state ({e})") from None
    if not isinstance(doc, dict) or doc.get("version") != CHECKPOINT_VERSION:
        raise ValueError(
            f"{path}: checkpoint version {doc.get('version') if isinstance(doc, dict) else None!r}, "
            f"this torchtcn reads version {CHECKPOINT_VERSION}"
        )
    return doc


def _build_model(path: Path, doc: dict, device: str) -> torch.nn.Module:
    try:
        with torch.device(device):
            return model_from_spec(doc["model"])
    except (KeyError, TypeError, ValueError, RuntimeError, OverflowError) as e:
        raise ValueError(f"{path}: invalid model spec in checkpoint ({e})") from None


def load_checkpoint(path, device: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`.

    The model is rebuilt from its stored spec and its weights loaded strictly (every tensor
    present, none unexpected, same shapes). Nothing is written.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: truncated or corrupted file, or weights that do not fit the stored spec;
            the message names the file.
    """
    path = Path(path)
    doc = read_checkpoint_state(path)
    check_digest(path, _read_header(path))
    tensors: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(path), framework="pt") as f:
            for k in f.keys():
                tensors[k] = f.get_tensor(k)
    except Exception as e:  # safetensors raises its own error types on corrupt data
        raise ValueError(f"{path}: corrupted checkpoint tensors ({e})") from None
    # Build on the meta device first and compare shapes: a small crafted file whose spec
    # describes a huge model is rejected before anything is allocated for it.
    skeleton = _build_model(path, doc, "meta")
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    model = _model_with_weights(path, doc, tensors, _MODEL, "model_aliases", expected, device)
    averaged = None
    if any(k.startswith(_AVERAGED) for k in tensors):
        averaged = _model_with_weights(path, doc, tensors, _AVERAGED, "averaged_aliases", expected, device)
    opt = None
    if doc.get("optimizer") is not None:
        # Adam's 0-d "step" counters stay on the CPU, as torch keeps them (on CUDA each would
        # cost a host sync per parameter per step); the moments go to the device
        opt_t = {k[len(_OPTIM):]: v if k.endswith(".step") and v.dim() == 0 else v.to(device)
                 for k, v in tensors.items() if k.startswith(_OPTIM)}
        opt = _join_optimizer(opt_t, doc["optimizer"])
    rng = {}
    if doc.get("rng") is not None:
        rng = {"tensors": {k[len(_RNG):]: v for k, v in tensors.items() if k.startswith(_RNG)},
               "meta": doc["rng"]}
    return Checkpoint(model, doc.get("trainer") or {}, opt, doc.get("scheduler"), rng, path, averaged)


def _model_with_weights(path: Path, doc: dict, tensors: dict[str, torch.Tensor], prefix: str,
                        aliases_key: str, expected: dict[str, tuple], device) -> torch.nn.Module:
    """The stored architecture with the weights under ``prefix`` (checked against ``expected``
    shapes first, then loaded strictly), on ``device``."""
    weights = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    aliases = doc.get(aliases_key) or {}
    if not isinstance(aliases, dict):
        raise ValueError(f"{path}: corrupted checkpoint state ({aliases_key} is not a dict)")
    for alias, name in aliases.items():
        if name in weights:
            weights[alias] = weights[name]
    found = {k: tuple(v.shape) for k, v in weights.items()}
    what = "weights" if prefix == _MODEL else "averaged weights"
    if found != expected:
        wrong = sorted(k for k in set(found) | set(expected) if found.get(k) != expected.get(k))
        raise ValueError(f"{path}: {what} do not match the stored architecture: {wrong[:5]} "
                         f"({len(wrong)} tensors missing, unexpected or of another shape)")
    model = _build_model(path, doc, "cpu")
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path}: {what} do not match the stored architecture ({e})") from None
    return model.to(device)
