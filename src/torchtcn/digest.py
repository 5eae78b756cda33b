"""A SHA-256 of a safetensors file's tensor bytes, kept in the file's own header.

safetensors checks a file's structure (header, offsets, sizes) but not its content, so a
flipped byte in the weights would load silently and give NaN or wrong outputs. Model files
(:func:`torchtcn.save`) and checkpoints record the digest of their data section when they
are written and check it when they are read. The data section does not depend on the
header (offsets are relative to its start), so the digest can be added to a finished blob.

Example:
    >>> import torch
    >>> from safetensors.torch import save
    >>> blob = add_digest(save({"w": torch.ones(3)}))
    >>> DIGEST_KEY in json.loads(blob[8 : 8 + struct.unpack("<Q", blob[:8])[0]])["__metadata__"]
    True
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

DIGEST_KEY = "torchtcn_sha256"
_CHUNK = 1 << 20


def add_digest(blob: bytes) -> bytes:
    """``blob`` (a serialized safetensors file) with the SHA-256 of its data in its metadata."""
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    data = memoryview(blob)[8 + n :]
    header.setdefault("__metadata__", {})[DIGEST_KEY] = hashlib.sha256(data).hexdigest()
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # safetensors keeps the data 8-byte aligned
    return struct.pack("<Q", len(raw)) + raw + bytes(data)


def check_digest(path: Path, header: dict) -> None:
    """Raise ``ValueError`` if the data of the file at ``path`` (whose parsed header is
    ``header``) does not match the digest recorded in it. Files written without one (before
    torchtcn kept digests) are not checked."""
    expected = (header.get("__metadata__") or {}).get(DIGEST_KEY)
    if expected is None:
        return
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        f.seek(8 + n)
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    if digest.hexdigest() != expected:
        raise ValueError(f"{path}: corrupted tensor data (its SHA-256 differs from the one "
                         "recorded when the file was written)")
