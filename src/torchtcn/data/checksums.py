"""Known MD5 digests of the benchmark files, and verification.

Rule used everywhere in :mod:`torchtcn.data`: the digest of a ``.gz`` file is the MD5 of
its *uncompressed content*, the digest of any other file is the MD5 of its bytes. Hashing
the content makes the MNIST check independent of how the archive was compressed (the
copies in circulation differ in their gzip headers, not in their content).

Example::

    >>> from torchtcn.data.checksums import verify, known_md5
    >>> known_md5("ptb.valid.txt")
    'aa0affc06ff7c36e977d7cd49e3839bf'
    >>> verify("ptb/ptb.valid.txt", known_md5("ptb.valid.txt"))  # doctest: +SKIP
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import zlib
from pathlib import Path

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20

#: MD5 of the content, keyed by file name. For MNIST the key is the ``.gz`` name and the
#: digest is that of the uncompressed IDX bytes (so the raw ``-ubyte`` file has it too).
KNOWN_MD5: dict[str, str] = {
    # MNIST (uncompressed IDX content)
    "train-images-idx3-ubyte.gz": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte.gz": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte.gz": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte.gz": "27ae3e4e09519cfbb04c329615203637",
    # Boulanger-Lewandowski et al. (2012) piano rolls (file bytes)
    "JSB_Chorales.mat": "dc87109f2b96bd44f9ce21d117766594",
    "Nottingham.mat": "7cc53d4cad543cf589d8769ae59c556a",
    # Penn Treebank, Mikolov's 10k-vocabulary version (file bytes)
    "ptb.train.txt": "f26c4b92c5fdc7b3f8c7cdcb991d8420",
    "ptb.valid.txt": "aa0affc06ff7c36e977d7cd49e3839bf",
    "ptb.test.txt": "8b80168b89c18661a38ef683c0dc3721",
}


def known_md5(path: str | os.PathLike) -> str | None:
    """The published digest for a file name, or ``None`` when we know none.

    An uncompressed MNIST file (``train-images-idx3-ubyte``) maps to the digest of its
    ``.gz`` entry, since both are digests of the same content.
    """
    name = Path(path).name
    if name in KNOWN_MD5:
        return KNOWN_MD5[name]
    return KNOWN_MD5.get(name + ".gz")


def is_gzip(path: str | os.PathLike) -> bool:
    """True when the file starts with the gzip magic bytes ``1f 8b`` (the suffix is not trusted)."""
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def content_md5(path: str | os.PathLike, decompress: bool | None = None) -> str:
    """MD5 hex digest of a file's content, hashed in 1 MiB chunks.

    Args:
        path: the file.
        decompress: hash the decompressed stream of a gzip file. ``None`` (default)
            decides from the file's magic bytes.

    Raises:
        ValueError: the gzip stream is corrupt or truncated (names the file).
    """
    path = Path(path)
    if decompress is None:
        decompress = is_gzip(path)
    h = hashlib.md5()
    try:
        opener = gzip.open if decompress else open
        with opener(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise ValueError(f"{path}: corrupt or truncated gzip file ({e})") from e
    return h.hexdigest()


def verify(path: str | os.PathLike, expected_md5: str, decompress: bool | None = None) -> None:
    """Check that ``path`` has content digest ``expected_md5``.

    Raises:
        ValueError: the digests differ; the message names the file, the expected and the
            found digest.
        FileNotFoundError: the file does not exist.

    Example::

        >>> verify("mnist/t10k-labels-idx1-ubyte.gz", "27ae3e4e09519cfbb04c329615203637")  # doctest: +SKIP
    """
    if not isinstance(expected_md5, str) or len(expected_md5) != 32:
        raise ValueError(f"expected_md5 must be a 32-character hex string, found {expected_md5!r}")
    found = content_md5(path, decompress)
    if found != expected_md5.lower():
        raise ValueError(
            f"checksum mismatch for {path}: expected md5 {expected_md5.lower()}, found {found}. "
            "The file is corrupt, truncated or a different version; download it again "
            "(torchtcn download NAME --overwrite)."
        )
    logger.debug("md5 ok for %s", path)


def verify_known(path: str | os.PathLike) -> bool:
    """Verify ``path`` against :data:`KNOWN_MD5` when its name is known.

    Returns:
        True when a digest was known and matched, False when none is known.

    Raises:
        ValueError: the digest is known and differs.
    """
    md5 = known_md5(path)
    if md5 is None:
        return False
    verify(path, md5)
    return True
