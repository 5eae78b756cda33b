"""MNIST from IDX files, and the sequential / permuted pixel-MNIST views of Bai et al. (2018).

Each image is read as a sequence of 784 pixels, one channel, so a model sees
``(N, 1, 784)``. The permuted variant (P-MNIST) applies one fixed permutation of the 784
positions to every image. The reference code drew it with an unseeded
``np.random.permutation``, so it changed between runs; here it comes from a seeded
``torch.Generator`` and is the same for every run with the same seed.

Example::

    >>> from torchtcn.data import sequential_mnist, permutation
    >>> x, y = sequential_mnist(split="test", permutation=permutation(0))  # doctest: +SKIP
    >>> x.shape, x.dtype, y.shape  # doctest: +SKIP
    (torch.Size([10000, 1, 784]), torch.float32, torch.Size([10000]))
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import zlib
from pathlib import Path

import numpy as np
import torch

from .checksums import known_md5
from .download import locate_or_download
from .paths import PathLike, find_file

logger = logging.getLogger(__name__)

#: Mean and standard deviation of the MNIST training pixels scaled to [0, 1] (the usual
#: torchvision constants, used by the reference code).
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
SEQ_LEN = 28 * 28

_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60_000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10_000),
}

# IDX type code -> big-endian numpy dtype (http://yann.lecun.com/exdb/mnist/, "IDX file format").
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

# Refuse headers that promise absurd sizes before allocating anything for them.
_MAX_IDX_BYTES = 1 << 32


def _read_exact(stream, n: int, path: Path, what: str) -> bytes:
    """Read exactly ``n`` bytes in chunks, or raise naming the file (truncation)."""
    buf = bytearray()
    while len(buf) < n:
        chunk = stream.read(min(n - len(buf), 1 << 22))
        if not chunk:
            raise ValueError(
                f"{path}: truncated IDX file: {what} needs {n} bytes, only {len(buf)} present"
            )
        buf += chunk
    return bytes(buf)


def read_idx(path: PathLike, *, return_md5: bool = False):
    """Read an IDX file (raw, or gzip-compressed; detected from the magic bytes).

    Validation is strict: the two leading zero bytes, a known type code, a dimension
    count >= 1, and a data section whose size equals the product of the dimensions
    exactly (a truncated or an oversized file is rejected).

    Args:
        path: the ``.gz`` or raw IDX file.
        return_md5: also return the MD5 of the uncompressed content (hashed as it is read,
            so checking costs no second pass).

    Returns:
        A ``torch.Tensor`` of the stored dtype (native byte order) and shape; with
        ``return_md5`` a tuple ``(tensor, md5_hex)``.

    Raises:
        ValueError: bad magic, bad dimensions, truncated/oversized data, or corrupt gzip;
            the message names the file.

    Example::

        >>> labels = read_idx("mnist/t10k-labels-idx1-ubyte.gz")  # doctest: +SKIP
        >>> labels.shape, labels.dtype  # doctest: +SKIP
        (torch.Size([10000]), torch.uint8)
    """
    path = Path(path)
    with open(path, "rb") as raw:
        compressed = raw.read(2) == b"\x1f\x8b"
    h = hashlib.md5()
    try:
        with (gzip.open(path, "rb") if compressed else open(path, "rb")) as f:
            magic = _read_exact(f, 4, path, "the 4-byte magic number")
            if magic[0] != 0 or magic[1] != 0:
                raise ValueError(
                    f"{path}: not an IDX file: magic number must start with two zero bytes, "
                    f"found {magic.hex()}"
                )
            code, ndim = magic[2], magic[3]
            if code not in _IDX_DTYPES:
                raise ValueError(
                    f"{path}: unknown IDX type code 0x{code:02x}; expected one of "
                    + ", ".join(f"0x{c:02x}" for c in _IDX_DTYPES)
                )
            if ndim < 1:
                raise ValueError(f"{path}: IDX header declares {ndim} dimensions, expected >= 1")
            dims_raw = _read_exact(f, 4 * ndim, path, f"the {ndim} dimension sizes")
            dims = tuple(int(d) for d in np.frombuffer(dims_raw, dtype=">u4"))
            dtype = _IDX_DTYPES[code]
            n_bytes = int(np.prod(dims, dtype=np.float64)) * dtype.itemsize
            if n_bytes > _MAX_IDX_BYTES:
                raise ValueError(f"{path}: IDX header declares shape {dims}, implausibly large")
            data = _read_exact(f, n_bytes, path, f"data of shape {dims}")
            extra = f.read(1)
            if extra:
                raise ValueError(
                    f"{path}: oversized IDX file: shape {dims} needs {n_bytes} data bytes, "
                    "but more follow"
                )
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise ValueError(f"{path}: corrupt or truncated gzip stream ({e})") from e
    arr = np.frombuffer(data, dtype=dtype).reshape(dims)
    arr = arr.astype(dtype.newbyteorder("="), copy=True)  # native order, writable
    tensor = torch.from_numpy(arr)
    if return_md5:
        h.update(magic)
        h.update(dims_raw)
        h.update(data)
        return tensor, h.hexdigest()
    return tensor


def _find_idx(stem: str, data_dir: PathLike | None) -> Path:
    names = [f"mnist/{stem}.gz", f"mnist/{stem}", f"{stem}.gz", stem,
             f"mnist/raw/{stem}.gz", f"mnist/raw/{stem}", f"MNIST/raw/{stem}.gz", f"MNIST/raw/{stem}"]
    return find_file(names, data_dir)


def _read_checked(path: Path, verify: bool) -> torch.Tensor:
    tensor, md5 = read_idx(path, return_md5=True)
    expected = known_md5(path)
    if verify and expected is not None and md5 != expected:
        raise ValueError(
            f"checksum mismatch for {path}: expected md5 {expected} (uncompressed content), "
            f"found {md5}. Delete the file and download it again."
        )
    return tensor


def load_mnist(
    data_dir: PathLike | None = None,
    split: str = "train",
    *,
    verify: bool = True,
    download: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load MNIST images and labels from the IDX files under ``data_dir/mnist/``.

    Args:
        data_dir: folder holding ``mnist/`` (see :func:`~torchtcn.data.paths.resolve_data_dir`).
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000).
        verify: check the known MD5 of the uncompressed content.
        download: fetch the files first when they are missing (needs internet).

    Returns:
        ``images``: uint8 tensor ``(N, 28, 28)``; ``labels``: int64 tensor ``(N,)`` in 0..9.

    Example::

        >>> images, labels = load_mnist(split="test")  # doctest: +SKIP
        >>> images.shape, labels[:3]  # doctest: +SKIP
        (torch.Size([10000, 28, 28]), tensor([7, 2, 1]))
    """
    if split not in _FILES:
        raise ValueError(f"split must be 'train' or 'test', found {split!r}")
    img_stem, lbl_stem, n_expected = _FILES[split]
    def locate():
        return _find_idx(img_stem, data_dir), _find_idx(lbl_stem, data_dir)

    img_path, lbl_path = locate_or_download("mnist", locate, data_dir) if download else locate()
    images = _read_checked(img_path, verify)
    labels = _read_checked(lbl_path, verify)
    if images.dtype != torch.uint8 or images.dim() != 3 or tuple(images.shape[1:]) != (28, 28):
        raise ValueError(
            f"{img_path}: expected uint8 images of shape (N, 28, 28), "
            f"found {images.dtype} {tuple(images.shape)}"
        )
    if labels.dtype != torch.uint8 or labels.dim() != 1:
        raise ValueError(f"{lbl_path}: expected uint8 labels of shape (N,), found {labels.dtype} {tuple(labels.shape)}")
    if labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"{img_path} holds {images.shape[0]} images but {lbl_path} holds {labels.shape[0]} labels"
        )
    if labels.numel() and int(labels.max()) > 9:
        raise ValueError(f"{lbl_path}: labels must be in 0..9, found {int(labels.max())}")
    if images.shape[0] != n_expected:
        logger.warning("MNIST %s split has %d images, expected %d", split, images.shape[0], n_expected)
    return images, labels.long()


def permutation(seed: int, length: int = SEQ_LEN) -> torch.Tensor:
    """The fixed pixel permutation of P-MNIST for ``seed``.

    Drawn with ``torch.randperm`` from a private ``torch.Generator`` seeded with ``seed``,
    so it never touches (or depends on) the global RNG.

    Returns:
        int64 tensor ``(length,)``, a permutation of ``0..length-1``.

    Example::

        >>> p = permutation(0)
        >>> p.shape, bool((p.sort().values == torch.arange(784)).all())
        (torch.Size([784]), True)
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, found {type(seed).__name__}")
    if length < 1:
        raise ValueError(f"length must be >= 1, found {length}")
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(length, generator=g)


def sequential_mnist(
    data_dir: PathLike | None = None,
    split: str = "train",
    *,
    permutation: torch.Tensor | None = None,
    verify: bool = True,
    download: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-by-pixel MNIST: each image becomes a 784-step, 1-channel sequence.

    Pixels are scaled to [0, 1], then normalised with mean 0.1307 and std 0.3081 (as in
    the reference code). With ``permutation`` the time steps are reordered, the same
    way for every image (P-MNIST).

    Args:
        data_dir, split, verify, download: as in :func:`load_mnist`.
        permutation: optional int64 tensor ``(784,)``, e.g. ``permutation(seed)``.

    Returns:
        ``x``: float32 ``(N, 1, 784)``; ``y``: int64 ``(N,)``.

    Example::

        >>> x, y = sequential_mnist(split="test")  # doctest: +SKIP
        >>> x.shape  # doctest: +SKIP
        torch.Size([10000, 1, 784])
    """
    images, labels = load_mnist(data_dir, split, verify=verify, download=download)
    x = to_sequences(images, permutation)
    return x, labels


def to_sequences(images: torch.Tensor, permutation: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 images ``(N, H, W)`` -> normalised float32 sequences ``(N, 1, H*W)``, optionally permuted."""
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 3:
        raise TypeError(f"images must be a uint8 tensor (N, H, W), found {getattr(images, 'dtype', type(images))}")
    n, h, w = images.shape
    x = images.reshape(n, 1, h * w).to(torch.float32).div_(255.0)
    x.sub_(MNIST_MEAN).div_(MNIST_STD)
    if permutation is not None:
        if not isinstance(permutation, torch.Tensor) or permutation.dtype != torch.int64 or permutation.shape != (h * w,):
            raise ValueError(
                f"permutation must be an int64 tensor of shape ({h * w},), found "
                f"{getattr(permutation, 'dtype', type(permutation))} {tuple(getattr(permutation, 'shape', ()))}"
            )
        if not torch.equal(permutation.sort().values, torch.arange(h * w)):
            raise ValueError(f"permutation must contain each of 0..{h * w - 1} exactly once")
        x = x[:, :, permutation]
    return x
