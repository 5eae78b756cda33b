"""Where the benchmark data lives on disk.

The loaders never hard-code a path. They ask :func:`resolve_data_dir` for the data
directory and :func:`find_file` for a file in it, in this order of precedence:

1. an explicit ``data_dir`` argument (the CLI's ``--data-dir`` flag),
2. the environment variable ``TORCHTCN_DATA``,
3. the first existing folder among ``./data``, ``../shared/data`` (relative to the
   working directory), ``shared/data`` next to any parent of the working directory, and
   ``data`` / ``../shared/data`` next to the repository root of a source checkout.

Example::

    >>> from torchtcn.data.paths import resolve_data_dir
    >>> resolve_data_dir("/tmp/my-data")
    PosixPath('/tmp/my-data')
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

ENV_VAR = "TORCHTCN_DATA"

PathLike = str | os.PathLike


def _repo_root() -> Path | None:
    """The checkout root when running from a source tree (``src/torchtcn/data/paths.py``)."""
    here = Path(__file__).resolve()
    # parents: [0]=data, [1]=torchtcn, [2]=src, [3]=repo root
    if len(here.parents) > 3 and here.parents[2].name == "src":
        return here.parents[3]
    return None


def candidate_data_dirs() -> list[Path]:
    """Every folder searched when no directory is given, most specific first.

    Returns:
        Candidate paths (they need not exist), without duplicates.
    """
    cwd = Path.cwd()
    cands = [cwd / "data", cwd.parent / "shared" / "data"]
    # A checkout may be run from a sub-folder: walk up looking for a ``shared/data`` sibling.
    for parent in [cwd, *cwd.parents]:
        cands.append(parent / "shared" / "data")
    root = _repo_root()
    if root is not None:
        cands += [root / "data", root.parent / "shared" / "data"]
    seen: set[Path] = set()
    out = []
    for c in cands:
        key = c.resolve() if c.exists() else c
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


def resolve_data_dir(data_dir: PathLike | None = None) -> Path:
    """The data directory: the argument, else ``$TORCHTCN_DATA``, else the first existing candidate.

    Args:
        data_dir: an explicit folder; returned as given (``~`` expanded) even if it does
            not exist yet, so that a download can create it.

    Returns:
        A ``Path``. When nothing is given and no candidate exists, ``./data`` (where
        ``download=True`` will put the files).

    Example::

        >>> resolve_data_dir("~/bench-data") == Path.home() / "bench-data"
        True
        >>> resolve_data_dir().name  # $TORCHTCN_DATA, else e.g. ../shared/data  # doctest: +SKIP
        'data'
    """
    if data_dir is not None:
        if not isinstance(data_dir, (str, os.PathLike)):
            raise TypeError(f"data_dir must be a str or path, found {type(data_dir).__name__}")
        return Path(data_dir).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    for cand in candidate_data_dirs():
        if cand.is_dir():
            logger.debug("using data directory %s", cand)
            return cand
    return Path.cwd() / "data"


def search_dirs(data_dir: PathLike | None = None) -> list[Path]:
    """The folders a loader looks in, in order: only ``data_dir`` (or ``$TORCHTCN_DATA``)
    when one is given, else every folder of :func:`candidate_data_dirs`."""
    if data_dir is not None or os.environ.get(ENV_VAR):
        return [resolve_data_dir(data_dir)]
    return candidate_data_dirs()


def how_to_get_data() -> str:
    """The sentence missing-data messages end with: the ways to point at or fetch the data."""
    return (
        "Get the data by passing the folder explicitly (CLI flag --data-dir DIR, or "
        f"data_dir=DIR), by setting the environment variable {ENV_VAR}=DIR, or download it "
        "(needs internet access): torchtcn download NAME (or torchtcn train ... --download), "
        "or the loader's download=True."
    )


def find_file(names: str | Sequence[str], data_dir: PathLike | None = None) -> Path:
    """Locate a data file by name or sub-path (``"mnist/train-images-idx3-ubyte.gz"``).

    Args:
        names: one relative name, or several alternatives tried in order (for instance
            the ``.gz`` and the uncompressed IDX file).
        data_dir: search only this folder; when ``None``, ``$TORCHTCN_DATA`` or, without
            it, every folder of :func:`candidate_data_dirs`.

    Returns:
        The first existing file.

    Raises:
        FileNotFoundError: nothing matched; the message lists every path tried and how
            to get the data.

    Example::

        >>> find_file(["ptb/ptb.train.txt", "ptb.train.txt"])  # doctest: +SKIP
        PosixPath('/work/shared/data/ptb/ptb.train.txt')
    """
    if isinstance(names, (str, os.PathLike)):
        names = [os.fspath(names)]
    names = list(names)
    if not names or not all(isinstance(n, str) for n in names):
        raise TypeError(f"names must be a non-empty str or sequence of str, found {names!r}")
    tried = []
    for d in search_dirs(data_dir):
        for n in names:
            p = d / n
            if p.is_file():
                return p
            tried.append(p)
    listing = "\n".join(f"  - {p}" for p in tried)
    raise FileNotFoundError(
        f"Could not find {' or '.join(repr(n) for n in names)}. Looked in:\n{listing}\n"
        + how_to_get_data()
    )
