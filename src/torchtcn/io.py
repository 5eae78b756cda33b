"""Save and load models: weights in safetensors, architecture as JSON in its metadata.

Loading never unpickles anything: the safetensors header is JSON, the tensors are raw bytes,
and the architecture is rebuilt from a strictly checked config before any weight is read.

Example:
    >>> import torchtcn, tempfile, os
    >>> model = torchtcn.TCN(1, [8, 8], kernel_size=3)
    >>> path = os.path.join(tempfile.mkdtemp(), "model.safetensors")
    >>> torchtcn.save(model, path)
    >>> type(torchtcn.load(path)).__name__
    'TCN'
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_model, save_model

from .digest import DIGEST_KEY, add_digest, check_digest
from .registry import model_from_spec, model_spec

FORMAT_KEY = "torchtcn_format"
FORMAT_VERSION = "1"
MODEL_KEY = "torchtcn_model"
# A safetensors header is a little-endian u64 length then that much JSON. Real headers of our
# models are a few kB; refuse absurd lengths before reading them (hostile or corrupted files).
MAX_HEADER_BYTES = 100 * 1024 * 1024


def save(model: torch.nn.Module, path, metadata: dict[str, str] | None = None) -> None:
    """Write ``model``'s weights and architecture to ``path`` (a ``.safetensors`` file).

    The file is written to a temporary name, flushed to disk and renamed, so an interrupted
    save never leaves a half-written file under ``path``.

    Args:
        model: a registered torchtcn model (TCN, LSTM, SequenceModel, LanguageModel, ...).
        path: destination file.
        metadata: extra string key/values to store in the header.

    Example:
        >>> import os, tempfile, torch, torchtcn
        >>> model = torchtcn.SequenceModel(torchtcn.TCN(1, [8, 8]), "last_step", 10).eval()
        >>> path = os.path.join(tempfile.mkdtemp(), "clf.safetensors")
        >>> save(model, path, metadata={"trained_on": "MNIST"})
        >>> x = torch.randn(2, 1, 7)
        >>> torch.equal(load(path)(x), model(x))                       # same outputs, no pickle
        True
    """
    path = Path(path)
    spec = model_spec(model)
    # checked here: safetensors would name only its temporary file
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot save the model to {path}: no folder {path.parent}")
    if path.is_dir():
        raise IsADirectoryError(f"cannot save the model to {path}: it is a folder; give a file name")
    meta = {FORMAT_KEY: FORMAT_VERSION, MODEL_KEY: json.dumps(spec)}
    for k, v in (metadata or {}).items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(f"metadata must map str to str, got {k!r}: {v!r}")
        if k in (FORMAT_KEY, MODEL_KEY, DIGEST_KEY):
            raise ValueError(f"metadata key {k!r} is reserved for torchtcn's own header; "
                             f"choose another name")
        meta[k] = v
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        save_model(model, str(tmp), metadata=meta)
        tmp.write_bytes(add_digest(tmp.read_bytes()))
        os.chmod(tmp, _default_file_mode())  # safetensors creates 0600; give what open() would
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _default_file_mode() -> int:
    """The permissions a plain ``open(path, "w")`` gets here: 0o666 minus the umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _read_header(path: Path) -> dict:
    """Parse and sanity-check the safetensors header without trusting its length field."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise FileNotFoundError(f"no model file at {path}") from None
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{path} is not a safetensors file: only {size} bytes long")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES or 8 + n > size:
            raise ValueError(
                f"{path} is truncated or not a safetensors file: header claims {n} bytes, "
                f"the file has {size}"
            )
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        # RecursionError: a crafted header of deeply nested brackets.
        raise ValueError(f"{path} is not a safetensors file: its header is not JSON ({e})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path} is not a safetensors file: its header is not a JSON object")
    return header


def read_metadata(path) -> dict[str, str]:
    """The string metadata stored in a torchtcn file's header."""
    path = Path(path)
    meta = _read_header(path).get("__metadata__") or {}
    if not isinstance(meta, dict) or meta.get(FORMAT_KEY) is None:
        raise ValueError(
            f"{path} is a safetensors file but not a torchtcn model (no {FORMAT_KEY!r} metadata)"
        )
    if meta[FORMAT_KEY] != FORMAT_VERSION:
        raise ValueError(
            f"{path} has torchtcn format {meta[FORMAT_KEY]!r}; this version reads {FORMAT_VERSION!r}"
        )
    return meta


def _build(path: Path, spec, device: str) -> torch.nn.Module:
    try:
        with torch.device(device):
            return model_from_spec(spec)
    except (TypeError, ValueError, RuntimeError, OverflowError) as e:
        # RuntimeError/OverflowError: sizes torch cannot represent (e.g. 10**30 channels).
        raise ValueError(f"{path}: invalid model config: {e}") from None


_FLOAT_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
                 "BF16": torch.bfloat16}


def _check_device(device) -> torch.device:
    """``device`` as a torch.device this machine has (a ValueError otherwise, before the file
    is read, so that a bad device is not reported as a bad file)."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device must be a torch device such as 'cpu' or 'cuda:0', got "
                         f"{device!r} ({e})") from None
    if device.type == "meta":
        raise ValueError("device 'meta' holds no data; load to 'cpu' or 'cuda'")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} asked for, but CUDA is not available here")
    return device


def _stored_float_dtype(header: dict) -> torch.dtype | None:
    """The floating dtype of the stored tensors when they share one (else None)."""
    kinds = {entry.get("dtype") for key, entry in header.items()
             if key != "__metadata__" and isinstance(entry, dict)}
    floats = {_FLOAT_DTYPES[k] for k in kinds if k in _FLOAT_DTYPES}
    return floats.pop() if len(floats) == 1 else None


def _match_stored_dtypes(model: torch.nn.Module, header: dict) -> None:
    """Give each floating tensor of ``model`` the dtype it is stored in (a model saved with
    mixed float dtypes, e.g. one float64 block), so that loading keeps every value exactly."""
    tensors = {**dict(model.named_parameters(remove_duplicate=False)),
               **dict(model.named_buffers(remove_duplicate=False))}
    for key, entry in header.items():
        stored = _FLOAT_DTYPES.get(entry.get("dtype")) if isinstance(entry, dict) else None
        t = tensors.get(key)
        if stored is not None and t is not None and t.is_floating_point() and t.dtype != stored:
            t.data = t.data.to(stored)


def _check_tensor_table(path: Path, skeleton: torch.nn.Module, header: dict) -> None:
    """Every tensor in the file must exist in ``skeleton`` with the same shape, and every
    parameter of ``skeleton`` must be in the file (under one of its names when tied)."""
    expected = skeleton.state_dict(keep_vars=True)
    stored = {}
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise ValueError(f"{path}: tensor {key!r} has no valid shape in the header: {entry!r:.200}")
        stored[key] = tuple(shape)
    unexpected = sorted(set(stored) - set(expected))
    wrong = [
        f"{k}: file {list(stored[k])} vs model {list(expected[k].shape)}"
        for k in sorted(stored)
        if k in expected and stored[k] != tuple(expected[k].shape)
    ]
    # Tied parameters are one object under several names; safetensors stores one of them.
    names_of: dict[int, list[str]] = {}
    for k, t in expected.items():
        names_of.setdefault(id(t), []).append(k)
    missing = sorted(ns[0] for ns in names_of.values() if not any(n in stored for n in ns))
    if unexpected or wrong or missing:

        def first(names: list) -> str:  # a crafted file can list thousands of names
            return f"{names[:5]}" + (f" (+{len(names) - 5} more)" if len(names) > 5 else "")

        raise ValueError(
            f"{path}: weights do not match the architecture its config describes: "
            f"missing {first(missing)}, unexpected {first(unexpected)}, wrong shapes {first(wrong)}"
        )


def load(path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Rebuild the model saved at ``path`` and load its weights (in eval mode), in the
    floating dtype they were saved in (a float64 model comes back float64, bit for bit).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is truncated, corrupted, not a torchtcn model, or its config or
            tensors do not match the architecture it describes; the message names the file.

    Example (a float64 model stays float64; see :func:`save` for a round trip):
        >>> import os, tempfile, torch, torchtcn
        >>> path = os.path.join(tempfile.mkdtemp(), "tcn.safetensors")
        >>> save(torchtcn.TCN(2, [4]).double(), path)
        >>> model = load(path)
        >>> model.training, next(model.parameters()).dtype
        (False, torch.float64)
    """
    path = Path(path)
    device = _check_device(device)
    if path.is_dir():
        raise ValueError(f"{path} is a directory, expected a .safetensors model file")
    header = _read_header(path)
    meta = read_metadata(path)
    try:
        spec = json.loads(meta[MODEL_KEY])
    except (KeyError, TypeError, json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"{path}: the model description is missing or not JSON ({e})") from None
    try:
        # Validate the tensor table (offsets, dtypes, sizes within the file) through
        # safetensors' own parser before anything is built.
        with safe_open(str(path), framework="pt") as f:
            f.keys()
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise ValueError(f"{path}: corrupted weights: {e}") from None
    # Build the architecture on the meta device first (no memory) and check it against the
    # tensor table: a small crafted file describing a huge model is rejected before anything
    # is allocated, since the table is bounded by the file's size.
    _check_tensor_table(path, _build(path, spec, "meta"), header)
    check_digest(path, header)
    model = _build(path, spec, "cpu")
    dtype = _stored_float_dtype(header)
    if dtype is not None:
        model = model.to(dtype)
    else:
        _match_stored_dtypes(model, header)
    try:
        missing, unexpected = load_model(model, str(path), strict=False, device=str(device))
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise ValueError(f"{path}: corrupted weights: {e}") from None
    if missing or unexpected:
        raise ValueError(
            f"{path}: weights do not match the architecture: missing {sorted(missing)}, "
            f"unexpected {sorted(unexpected)}"
        )
    return model.to(device).eval()
