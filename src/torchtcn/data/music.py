"""Polyphonic music piano rolls (Boulanger-Lewandowski et al., 2012) from ``.mat`` files.

Each file holds three cell arrays, ``traindata``, ``validdata`` and ``testdata``; each
cell is one piece, a ``T x 88`` binary matrix (time steps x piano keys). The files are
read with ``scipy.io.loadmat``, which parses the MATLAB format and never unpickles, so a
hostile file can fail to load but cannot run code.

Named sets (resolved under ``data_dir/music/``): ``JSB_Chorales`` (229/76/77 pieces),
``Nottingham`` (694/173/170), and, when present, ``MuseData`` and ``Piano_midi``. Any
other ``.mat`` path of the same format is accepted too.

Example::

    >>> from torchtcn.data import load_piano_rolls
    >>> rolls = load_piano_rolls("JSB_Chorales")  # doctest: +SKIP
    >>> len(rolls["train"]), rolls["train"][0].shape  # doctest: +SKIP
    (229, torch.Size([129, 88]))
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from .checksums import verify_known
from .download import locate_or_download
from .paths import PathLike, find_file

logger = logging.getLogger(__name__)

N_KEYS = 88
SPLIT_KEYS = {"train": "traindata", "valid": "validdata", "test": "testdata"}

#: Canonical file stem for each named set; the short names are the reference code's ``--data`` values.
NAMED_SETS = {
    "JSB_Chorales": "JSB_Chorales",
    "JSB": "JSB_Chorales",
    "Nottingham": "Nottingham",
    "Nott": "Nottingham",
    "MuseData": "MuseData",
    "Muse": "MuseData",
    "Piano_midi": "Piano_midi",
    "Piano": "Piano_midi",
}

#: Number of pieces per split, where known; checked when a named set is loaded.
EXPECTED_COUNTS = {
    "JSB_Chorales": {"train": 229, "valid": 76, "test": 77},
    "Nottingham": {"train": 694, "valid": 173, "test": 170},
}


def _loadmat(path: Path) -> dict:
    try:
        import scipy.io
    except ImportError as e:  # scipy is the optional "data" extra
        raise ImportError(
            "reading .mat piano rolls needs scipy: pip install 'torchtcn[data]' (or scipy)"
        ) from e
    with open(path, "rb") as f:
        head = f.read(128)
    if head.startswith(b"\x89HDF"):
        raise ValueError(f"{path}: MATLAB v7.3 (HDF5) files are not supported; save with -v7 or earlier")
    try:
        return scipy.io.loadmat(str(path))
    except NotImplementedError as e:
        raise ValueError(f"{path}: unsupported .mat variant ({e})") from e
    except Exception as e:  # scipy raises ValueError/TypeError/OSError/... on garbage
        raise ValueError(
            f"{path}: not a readable MATLAB .mat file ({type(e).__name__}: {e}); "
            "expected a v5 .mat with traindata/validdata/testdata"
        ) from e


def _cells(value: np.ndarray, path: Path, key: str) -> list:
    """Flatten a MATLAB cell array (object array) to a list of its elements."""
    if not isinstance(value, np.ndarray) or value.dtype != object:
        raise ValueError(
            f"{path}: '{key}' must be a cell array of T x {N_KEYS} matrices, "
            f"found {type(value).__name__} of dtype {getattr(value, 'dtype', None)}"
        )
    return list(value.ravel(order="F"))


def _to_roll(elem, path: Path, key: str, i: int) -> torch.Tensor:
    where = f"{path}: {key}[{i}]"
    if hasattr(elem, "toarray") and hasattr(elem, "nnz"):  # a MATLAB sparse() matrix (scipy.sparse)
        elem = elem.toarray()
    if not isinstance(elem, np.ndarray) or elem.dtype == object or elem.dtype.kind not in "biuf":
        raise ValueError(f"{where} must be a numeric T x {N_KEYS} matrix, found {type(elem).__name__} "
                         f"of dtype {getattr(elem, 'dtype', None)}")
    # an empty piece (T = 0) is kept: the training set skips it with the 1-frame ones
    if elem.ndim != 2 or elem.shape[1] != N_KEYS:
        raise ValueError(f"{where} must have shape (T, {N_KEYS}), found {elem.shape}")
    if not np.isin(elem, (0, 1)).all():
        bad = np.unique(elem[~np.isin(elem, (0, 1))])[:5]
        raise ValueError(f"{where} must be binary (0/1), found values such as {bad.tolist()}")
    return torch.from_numpy(np.ascontiguousarray(elem, dtype=np.float32))


def _resolve(path_or_name: PathLike, data_dir: PathLike | None, download: bool) -> tuple[Path, str | None]:
    name = os.fspath(path_or_name) if isinstance(path_or_name, (str, os.PathLike)) else None
    if name is None:
        raise TypeError(f"expected a set name or a .mat path, found {type(path_or_name).__name__}")
    if name in NAMED_SETS:
        stem = NAMED_SETS[name]
        rel = [f"music/{stem}.mat", f"{stem}.mat"]
        def locate():
            return find_file(rel, data_dir)

        return (locate_or_download(stem, locate, data_dir) if download else locate()), stem
    path = Path(name).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no such .mat file, and {name!r} is not a named set "
            f"(named sets: {', '.join(sorted(set(NAMED_SETS.values())))})"
        )
    return path, None


def load_piano_rolls(
    path_or_name: PathLike,
    data_dir: PathLike | None = None,
    *,
    verify: bool = True,
    download: bool = False,
) -> dict[str, list[torch.Tensor]]:
    """Load a piano-roll data set.

    Args:
        path_or_name: a named set (``"JSB_Chorales"``/``"JSB"``, ``"Nottingham"``/``"Nott"``,
            ``"MuseData"``, ``"Piano_midi"``) found under ``data_dir/music/``, or the path
            of any ``.mat`` file with ``traindata``/``validdata``/``testdata``.
        data_dir: where named sets are looked up.
        verify: check the known MD5 of a file named like a known set (by name or by
            path), and for JSB/Nottingham the piece counts.
        download: fetch a missing named set (needs internet).

    Returns:
        ``{"train": [...], "valid": [...], "test": [...]}``, each a list of float32
        tensors of shape ``(T_i, 88)`` with values in {0, 1}.

    Raises:
        ValueError: the file is not a readable .mat (text, pickle, truncated...), a key
            is missing, or a piece is not a binary ``T x 88`` matrix; the message names
            the file.

    Example::

        >>> rolls = load_piano_rolls("Nottingham")  # doctest: +SKIP
        >>> [len(rolls[s]) for s in ("train", "valid", "test")]  # doctest: +SKIP
        [694, 173, 170]
    """
    path, stem = _resolve(path_or_name, data_dir, download)
    # A file given by path is still checked when its name is one we know a digest for.
    if verify and verify_known(path):
        stem = stem or path.stem
    mat = _loadmat(path)
    missing = [k for k in SPLIT_KEYS.values() if k not in mat]
    if missing:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise ValueError(f"{path}: missing key(s) {missing}; expected traindata/validdata/testdata, found {found}")
    out: dict[str, list[torch.Tensor]] = {}
    for split, key in SPLIT_KEYS.items():
        out[split] = [_to_roll(e, path, key, i) for i, e in enumerate(_cells(mat[key], path, key))]
    if verify and stem in EXPECTED_COUNTS:
        counts = {s: len(v) for s, v in out.items()}
        if counts != EXPECTED_COUNTS[stem]:
            raise ValueError(f"{path}: expected {EXPECTED_COUNTS[stem]} pieces per split, found {counts}")
    logger.debug("loaded %s: %s pieces", path, {s: len(v) for s, v in out.items()})
    return out
