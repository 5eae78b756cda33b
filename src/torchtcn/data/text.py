"""Text corpora for language modelling: vocabularies, encoding, and the benchmark loaders.

Conventions (they decide the numbers a model is compared on, so they are fixed here):

* **Word level** (PTB, Wikitext-103): each line is split on whitespace and gets an
  ``<eos>`` token appended, empty lines included (the PTB convention of Mikolov and of
  the reference code). The vocabulary is built from the *training* split only, in order
  of first appearance; a token of valid/test that is not in it raises ``ValueError``
  naming the token (``oov="error"``, the default; PTB and Wikitext-103 have none), or is
  mapped to ``<unk>`` with ``oov="unk"``.
* **Character level** (char PTB, text8): the text is read as characters and a line end is
  the single character ``"\\n"``. For PTB the one leading space of every line is removed
  (``strip_leading_space=True``); this reproduces the published sizes exactly,
  5,059,550 / 396,412 / 446,184 characters with an alphabet of 50. (The reference code
  instead spelled every line end as the five characters ``<eos>``.) The alphabet is built
  from the training split (sorted by code point); the reference built it from all three
  splits, which leaks nothing for PTB since valid/test use a subset of the training
  alphabet. A character missing from train is mapped to the extra symbol ``"\\ufffd"``
  (added only when such a character occurs, ``oov="unk"``, the char default) or raises
  with ``oov="error"``.

Encoding is vectorised: a code-point lookup table for characters (the 100M characters of
text8 take about half a second), and a C-level ``map`` over chunks of lines for words
(about 0.2 s per million tokens; memory stays bounded because the token list of a whole
corpus is never built).

Example::

    >>> from torchtcn.data import load_ptb, batchify, history_windows
    >>> corpus = load_ptb(level="char")  # doctest: +SKIP
    >>> len(corpus.dictionary), corpus.train.numel()  # doctest: +SKIP
    (50, 5059550)
    >>> streams = batchify(corpus.train, 32)  # (32, 158110)  # doctest: +SKIP
    >>> for inp, target, n_scored in history_windows(streams, 400, 320):  # doctest: +SKIP
    ...     pass  # score output[:, :, -n_scored:] against target[:, -n_scored:]
"""

from __future__ import annotations

import io
import itertools
import logging
import os
import re
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from .checksums import verify_known
from .download import locate_or_download
from .paths import PathLike, find_file

logger = logging.getLogger(__name__)

EOS = "<eos>"
UNK = "<unk>"
#: Stand-in for a character missing from the training alphabet (U+FFFD REPLACEMENT CHARACTER).
UNK_CHAR = "\ufffd"
SPLITS = ("train", "valid", "test")
LEVELS = ("word", "char")
#: text8 split of Bai et al. (2018) (and Mikolov et al. 2012): first 90M / next 5M / last 5M characters.
TEXT8_SPLIT = (90_000_000, 5_000_000, 5_000_000)


# --------------------------------------------------------------------------- dictionary


class Dictionary:
    """A bijection between symbols (words or characters) and ids ``0..len-1``.

    Example::

        >>> d = Dictionary(["a", "b"])
        >>> d.add("c"), d.index("b"), d[0], len(d)
        (2, 1, 'a', 3)
        >>> d.encode_tokens(["c", "a"]).tolist()
        [2, 0]
    """

    def __init__(self, symbols: Iterable[str] = ()) -> None:
        self._idx2sym: list[str] = []
        self._sym2idx: dict[str, int] = {}
        self._lut: np.ndarray | None = None
        for s in symbols:
            self.add(s)

    def add(self, symbol: str) -> int:
        """Add ``symbol`` if new; return its id."""
        if not isinstance(symbol, str):
            raise TypeError(f"symbols must be str, found {type(symbol).__name__}")
        idx = self._sym2idx.get(symbol)
        if idx is None:
            idx = len(self._idx2sym)
            self._idx2sym.append(symbol)
            self._sym2idx[symbol] = idx
            self._lut = None
        return idx

    def index(self, symbol: str) -> int:
        """The id of ``symbol``; ``ValueError`` naming it when absent."""
        try:
            return self._sym2idx[symbol]
        except KeyError:
            raise ValueError(f"symbol {symbol!r} is not in the vocabulary ({len(self)} symbols)") from None

    def __getitem__(self, idx: int) -> str:
        return self._idx2sym[idx]

    def __len__(self) -> int:
        return len(self._idx2sym)

    def __contains__(self, symbol: object) -> bool:
        return symbol in self._sym2idx

    def __iter__(self) -> Iterator[str]:
        return iter(self._idx2sym)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Dictionary) and self._idx2sym == other._idx2sym

    def __repr__(self) -> str:
        head = ", ".join(repr(s) for s in self._idx2sym[:8])
        return f"Dictionary({len(self)} symbols: {head}{', ...' if len(self) > 8 else ''})"

    @property
    def symbols(self) -> list[str]:
        """All symbols, in id order (a copy)."""
        return list(self._idx2sym)

    # -- encoding -----------------------------------------------------------------------

    def lookup_tokens(self, tokens: Sequence[str]) -> np.ndarray:
        """int64 ids of ``tokens``, ``-1`` where a token is unknown (no error)."""
        get = self._sym2idx.get
        return np.fromiter(map(get, tokens, itertools.repeat(-1)), dtype=np.int64, count=len(tokens))

    def lookup_chars(self, text: str) -> np.ndarray:
        """int64 ids of the characters of ``text``, ``-1`` where a character is unknown."""
        cps = _codepoints(text)
        lut = self._char_lut()
        if cps.size == 0:
            return np.zeros(0, dtype=np.int64)
        if int(cps.max()) < lut.size:
            return lut[cps]
        inside = cps < lut.size
        return np.where(inside, lut[np.where(inside, cps, 0)], -1)

    def _char_lut(self) -> np.ndarray:
        # Code point -> id table; multi-character symbols (e.g. "<eos>") are simply not in it.
        if self._lut is None:
            singles = [(ord(s), i) for i, s in enumerate(self._idx2sym) if len(s) == 1]
            size = max((c for c, _ in singles), default=-1) + 1
            lut = np.full(size, -1, dtype=np.int64)
            for c, i in singles:
                lut[c] = i
            self._lut = lut
        return self._lut

    def encode_tokens(self, tokens: Sequence[str], unk: str | None = None, where: str = "input") -> torch.Tensor:
        """Word ids ``(len(tokens),)`` int64; unknown tokens map to ``unk`` or raise ``ValueError``."""
        ids = self.lookup_tokens(tokens)
        return torch.from_numpy(self._resolve_unknown(ids, unk, where, lambda i: tokens[i], "token"))

    def encode_chars(self, text: str, unk: str | None = None, where: str = "input") -> torch.Tensor:
        """Character ids ``(len(text),)`` int64; unknown characters map to ``unk`` or raise ``ValueError``."""
        ids = self.lookup_chars(text)
        return torch.from_numpy(self._resolve_unknown(ids, unk, where, lambda i: text[i], "character"))

    def _resolve_unknown(self, ids: np.ndarray, unk, where, sym_at, kind) -> np.ndarray:
        bad = ids < 0
        if bad.any():
            if unk is None:
                pos = int(np.flatnonzero(bad)[0])
                raise ValueError(
                    f"{where}: {kind} {sym_at(pos)!r} (position {pos}) is not in the vocabulary; "
                    f"{int(bad.sum())} unknown {kind}s in all. Build the vocabulary from more data "
                    f"or map unknowns with oov='unk'."
                )
            ids[bad] = self.index(unk)
        return ids

    def decode(self, ids: Iterable[int] | torch.Tensor, sep: str = "") -> str:
        """The text of ``ids`` (``sep=" "`` for words)."""
        if isinstance(ids, torch.Tensor):
            ids = ids.reshape(-1).tolist()
        return sep.join(self._idx2sym[i] for i in ids)


def _codepoints(text: str) -> np.ndarray:
    if text.isascii():  # the common case, and 4x less memory than UTF-32
        return np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    return np.frombuffer(text.encode("utf-32-le"), dtype="<u4")


# --------------------------------------------------------------------------- tokenising


def tokenize_words(text: str, add_eos: bool = True) -> list[str]:
    """Whitespace tokens, one ``<eos>`` after every line (including empty lines).

    A final line without a trailing newline still counts as a line, the way iterating over
    a file does.

    Example::

        >>> tokenize_words("a b\\n\\nc\\n")
        ['a', 'b', '<eos>', '<eos>', 'c', '<eos>']
    """
    if not add_eos:
        return text.split()
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    tokens: list[str] = []
    for line in lines:
        tokens.extend(line.split())
        tokens.append(EOS)
    return tokens


_LINES_PER_CHUNK = 1 << 16


def _encode_words(
    text: str, dictionary: Dictionary, *, grow: bool, add_eos: bool
) -> tuple[np.ndarray, tuple[str, int] | None]:
    """Word ids of ``text`` (same tokens as :func:`tokenize_words`), ``-1`` for unknown words.

    Works through the text in chunks of lines so that no list of all tokens (100M Python
    strings for Wikitext-103) is ever held. With ``grow`` new words are added to
    ``dictionary`` in order of first appearance.

    Returns:
        The ids and the first unknown word with its position (or ``None``).
    """
    parts: list[np.ndarray] = []
    first_unknown = None
    offset = 0
    lines = io.StringIO(text)  # newline="\n": splits on "\n" only, like tokenize_words
    while chunk := list(itertools.islice(lines, _LINES_PER_CHUNK)):
        tokens: list[str] = []
        for line in chunk:
            tokens.extend(line.split())
            if add_eos:
                tokens.append(EOS)
        if grow:
            for tok in dict.fromkeys(tokens):  # first-appearance order, C speed
                if tok not in dictionary:
                    dictionary.add(tok)
        ids = dictionary.lookup_tokens(tokens)
        if first_unknown is None and (ids < 0).any():
            pos = int(np.flatnonzero(ids < 0)[0])
            first_unknown = (tokens[pos], offset + pos)
        parts.append(ids)
        offset += len(tokens)
    return (np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)), first_unknown


_LEADING_SPACE = re.compile(r"^ ", flags=re.MULTILINE)


def remove_leading_space(text: str) -> str:
    """Remove the single leading space of every line (PTB lines start with one)."""
    return _LEADING_SPACE.sub("", text)


def read_text(path: PathLike) -> str:
    """UTF-8 text of a file, with ``\\r\\n`` and ``\\r`` line ends read as ``\\n``, and without
    the byte-order mark that Windows editors put at the start of a "UTF-8" file (kept, it
    would glue U+FEFF to the first word).

    Raises:
        ValueError: the file is not valid UTF-8, or holds NUL bytes (a binary file that
            happens to decode: model weights, a zip, a database...); names the file.
    """
    path = Path(path)
    try:
        with open(path, encoding="utf-8-sig", newline=None) as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e})") from e
    nul = text.find("\0")
    if nul >= 0:
        raise ValueError(f"{path}: not a text file (NUL byte at character {nul})")
    return text


# --------------------------------------------------------------------------- corpus


@dataclass(frozen=True, eq=False)  # holds tensors: compare fields explicitly
class Corpus:
    """A tokenised corpus: one 1-D int64 id tensor per split and the shared dictionary.

    Attributes:
        dictionary: the vocabulary (built from ``train``).
        train, valid, test: int64 tensors ``(n_tokens,)``.
        level: ``"word"`` or ``"char"``.
    """

    dictionary: Dictionary
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    level: str

    def __repr__(self) -> str:
        return (
            f"Corpus(level={self.level!r}, vocab={len(self.dictionary)}, train={self.train.numel()}, "
            f"valid={self.valid.numel()}, test={self.test.numel()})"
        )

    def split(self, name: str) -> torch.Tensor:
        """The ids of split ``name`` (``"train"``, ``"valid"`` or ``"test"``)."""
        if name not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, found {name!r}")
        return getattr(self, name)

    @classmethod
    def from_texts(
        cls,
        train: str,
        valid: str,
        test: str,
        *,
        level: str = "word",
        add_eos: bool = True,
        strip_leading_space: bool = False,
        oov: str | None = None,
        names: Sequence[str] = SPLITS,
    ) -> Corpus:
        """Tokenise and encode three texts; the vocabulary comes from ``train``.

        Args:
            train, valid, test: the raw texts.
            level: ``"word"`` or ``"char"``.
            add_eos: word level: append ``<eos>`` to every line.
            strip_leading_space: char level: remove each line's single leading space (PTB).
            oov: ``"error"`` or ``"unk"``; default ``"error"`` for words, ``"unk"`` for characters.
            names: how the three texts are named in error messages (e.g. file paths).

        Example::

            >>> c = Corpus.from_texts("a b\\n", "b a\\n", "a\\n")
            >>> c.train.tolist(), c.dictionary.symbols
            ([0, 1, 2], ['a', 'b', '<eos>'])
        """
        if level not in LEVELS:
            raise ValueError(f"level must be 'word' or 'char', found {level!r}")
        for n, t in zip(SPLITS, (train, valid, test)):
            if not isinstance(t, str):
                raise TypeError(f"{n} text must be a str, found {type(t).__name__}")
        if oov is None:
            oov = "error" if level == "word" else "unk"
        if oov not in ("error", "unk"):
            raise ValueError(f"oov must be 'error' or 'unk', found {oov!r}")
        kind = "token" if level == "word" else "character"
        if level == "word":
            dictionary = Dictionary()
            unk_sym = UNK
            encoded = [_encode_words(t, dictionary, grow=(i == 0), add_eos=add_eos)
                       for i, t in enumerate((train, valid, test))]
            ids = [e[0] for e in encoded]
            first_unknown = [e[1] for e in encoded]
            if ids[0].size == 0:
                raise ValueError(f"{names[0]}: the training text is empty")
        else:
            if strip_leading_space:
                train, valid, test = (remove_leading_space(t) for t in (train, valid, test))
            if not train:
                raise ValueError(f"{names[0]}: the training text is empty")
            alphabet = np.unique(_codepoints(train))
            dictionary = Dictionary(chr(int(c)) for c in alphabet)
            unk_sym = UNK_CHAR
            ids = [dictionary.lookup_chars(t) for t in (train, valid, test)]
            first_unknown = [None] * 3
            for i, t in ((1, valid), (2, test)):
                bad = np.flatnonzero(ids[i] < 0)
                if bad.size:
                    first_unknown[i] = (t[int(bad[0])], int(bad[0]))
        for i in (1, 2):
            bad = ids[i] < 0
            if not bad.any():
                continue
            if oov == "error":
                sym, pos = first_unknown[i]
                raise ValueError(
                    f"{names[i]}: {kind} {sym!r} (position {pos}) is not in the vocabulary "
                    f"built from {names[0]}; {int(bad.sum())} such {kind}s. Pass oov='unk' to map them "
                    f"to {unk_sym!r}."
                )
            logger.warning("%s: %d %ss not in the training vocabulary, mapped to %r",
                           names[i], int(bad.sum()), kind, unk_sym)
            ids[i][bad] = dictionary.add(unk_sym)
        tensors = [torch.from_numpy(a) for a in ids]
        return cls(dictionary, *tensors, level=level)


def _check_level(level: str) -> None:
    if level not in LEVELS:
        raise ValueError(f"level must be 'word' or 'char', found {level!r}")


def _corpus_from_files(paths: Sequence[Path], level: str, **kw) -> Corpus:
    texts = [read_text(p) for p in paths]
    corpus = Corpus.from_texts(*texts, level=level, names=[str(p) for p in paths], **kw)
    logger.info("loaded %s", corpus)
    return corpus


# --------------------------------------------------------------------------- loaders


def _find_splits(name: str, names, data_dir, download: bool) -> list[Path]:
    """The train/valid/test files (``names(split)`` lists each one's alternatives), fetching
    the data set ``name`` first when ``download`` is set and one is missing."""

    def locate():
        return [find_file(names(s), data_dir) for s in SPLITS]

    return locate_or_download(name, locate, data_dir) if download else locate()


def load_ptb(
    data_dir: PathLike | None = None,
    level: str = "word",
    *,
    verify: bool = True,
    download: bool = False,
) -> Corpus:
    """Penn Treebank (Mikolov's 10k-word version) at word or character level.

    Files: ``ptb/ptb.{train,valid,test}.txt`` under ``data_dir`` (or directly in it).

    Word level: 929,589 / 73,760 / 82,430 tokens including ``<eos>``, vocabulary 10,000.
    Character level: 5,059,550 / 396,412 / 446,184 characters, alphabet 50 (see the module
    docstring for the convention).

    Example::

        >>> load_ptb(level="word")  # doctest: +SKIP
        Corpus(level='word', vocab=10000, train=929589, valid=73760, test=82430)
    """
    _check_level(level)
    names = lambda s: [f"ptb/ptb.{s}.txt", f"ptb.{s}.txt"]  # noqa: E731
    paths = _find_splits("ptb", names, data_dir, download)
    if verify:
        for p in paths:
            verify_known(p)
    kw = {"strip_leading_space": True} if level == "char" else {}
    return _corpus_from_files(paths, level, **kw)


_SPLIT_FILE_PATTERNS = ("{s}.txt", "ptb.{s}.txt", "wiki.{s}.tokens", "{s}.tokens", "{s}")


def _split_files(source) -> list[Path]:
    if isinstance(source, Mapping):
        missing = [s for s in SPLITS if s not in source]
        if missing:
            raise ValueError(f"expected keys {list(SPLITS)}, missing {missing}")
        paths = [Path(source[s]) for s in SPLITS]
    elif isinstance(source, (str, os.PathLike)):
        d = Path(source).expanduser()
        if not d.is_dir():
            raise FileNotFoundError(f"{d}: not a directory (expected a folder with train/valid/test files)")
        paths = []
        for s in SPLITS:
            tried = [d / pat.format(s=s) for pat in _SPLIT_FILE_PATTERNS]
            hit = next((p for p in tried if p.is_file()), None)
            if hit is None:
                raise FileNotFoundError(
                    f"no {s} file in {d}; looked for " + ", ".join(p.name for p in tried)
                )
            paths.append(hit)
    elif isinstance(source, Sequence) and len(source) == 3:
        paths = [Path(p) for p in source]
    else:
        raise TypeError(
            "expected a directory, a (train, valid, test) sequence of paths or a mapping with "
            f"keys train/valid/test, found {type(source).__name__}"
        )
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no such file")
    return paths


def load_text_corpus(
    source: PathLike | Sequence[PathLike] | Mapping[str, PathLike],
    level: str = "word",
    *,
    add_eos: bool = True,
    strip_leading_space: bool = False,
    oov: str | None = None,
) -> Corpus:
    """Any user corpus of three UTF-8 text files (train/valid/test).

    Args:
        source: a folder holding ``train.txt``/``valid.txt``/``test.txt`` (also found:
            ``ptb.train.txt``, ``wiki.train.tokens``, ``train.tokens``, ``train``), a
            ``(train, valid, test)`` sequence of paths, or a mapping with those keys.
        level, add_eos, strip_leading_space, oov: see :meth:`Corpus.from_texts`.

    Example::

        >>> corpus = load_text_corpus("my_corpus/", level="char")  # doctest: +SKIP
    """
    _check_level(level)
    paths = _split_files(source)
    return _corpus_from_files(paths, level, add_eos=add_eos, strip_leading_space=strip_leading_space, oov=oov)


def load_wikitext103(
    path: PathLike | None = None,
    *,
    oov: str = "error",
    download: bool = False,
) -> Corpus:
    """Wikitext-103 (Merity et al., 2016), word level.

    Args:
        path: the folder holding ``wiki.{train,valid,test}.tokens``, or a data directory
            holding ``wikitext-103/``. ``None``: the default data directory.
        oov: ``"error"`` (default; the release has none) or ``"unk"``.
        download: fetch and extract the release when missing (needs internet; ~180 MB).

    Returns:
        A word-level :class:`Corpus` (``<eos>`` after every line, vocabulary from train;
        267,735 words plus ``<eos>`` on the real release).
    """
    names = lambda s: [f"wiki.{s}.tokens", f"wikitext-103/wiki.{s}.tokens"]  # noqa: E731
    paths = _find_splits("wikitext103", names, path, download)
    return _corpus_from_files(paths, "word", add_eos=True, oov=oov)


def _read_text8(path: Path) -> str:
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                members = [m for m in zf.infolist() if not m.is_dir()]
                named = [m for m in members if Path(m.filename).name == "text8"]
                if len(named) == 1:
                    member = named[0]
                elif len(members) == 1:
                    member = members[0]
                else:
                    raise ValueError(
                        f"{path}: expected a zip with one member 'text8', found "
                        f"{[m.filename for m in members]}"
                    )
                data = zf.read(member)
        except zipfile.BadZipFile as e:
            raise ValueError(f"{path}: corrupt zip file ({e})") from e
    else:
        data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e})") from e


def load_text8(
    path: PathLike | None = None,
    *,
    split_sizes: tuple[int, int, int] = TEXT8_SPLIT,
    data_dir: PathLike | None = None,
    oov: str = "unk",
    download: bool = False,
) -> Corpus:
    """text8 (Mahoney), character level, split 90M / 5M / 5M as in Bai et al. (2018).

    Args:
        path: ``text8.zip`` or the raw ``text8`` file, or a folder holding either (also in
            its ``text8/``); ``None``: look for them under ``data_dir``.
        split_sizes: characters in train/valid/test, consecutive from the start. They must
            add up to the file's length exactly (100,000,000 for the real file).
        data_dir, download: where to look / whether to fetch ``text8.zip`` when missing.
        oov: for characters of valid/test absent from train (see :meth:`Corpus.from_texts`).

    Returns:
        A character-level :class:`Corpus` (alphabet of 27 on the real file: a-z and space).
    """
    names = ["text8.zip", "text8", "text8/text8.zip", "text8/text8"]
    if path is None:
        locate = lambda: find_file(names, data_dir)  # noqa: E731
        path = locate_or_download("text8", locate, data_dir) if download else locate()
    path = Path(path).expanduser()
    if path.is_dir():
        path = find_file(names, path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if (len(split_sizes) != 3 or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in split_sizes)):
        raise ValueError(f"split_sizes must be three positive ints, found {split_sizes!r}")
    text = _read_text8(path)
    if sum(split_sizes) != len(text):
        raise ValueError(
            f"{path}: holds {len(text):,} characters but split_sizes {split_sizes} add up to "
            f"{sum(split_sizes):,}"
        )
    a, b, _ = split_sizes
    corpus = Corpus.from_texts(text[:a], text[a:a + b], text[a + b:], level="char", oov=oov,
                               names=[f"{path}[{s}]" for s in SPLITS])
    logger.info("loaded %s", corpus)
    return corpus


# --------------------------------------------------------------------------- batching


def batchify(data: torch.Tensor, n_streams: int) -> torch.Tensor:
    """Cut a 1-D token sequence into ``n_streams`` contiguous streams.

    Stream ``i`` is ``data[i*L : (i+1)*L]`` with ``L = len(data) // n_streams``; the last
    ``len(data) % n_streams`` tokens are dropped (fewer than ``n_streams``, logged at
    debug level) so that every stream has the same length.

    Returns:
        A view ``(n_streams, L)`` of ``data``.

    Example::

        >>> batchify(torch.arange(10), 3)
        tensor([[0, 1, 2],
                [3, 4, 5],
                [6, 7, 8]])
    """
    if not isinstance(data, torch.Tensor) or data.dim() != 1:
        raise TypeError(f"data must be a 1-D tensor, found {getattr(data, 'shape', type(data).__name__)}")
    if isinstance(n_streams, bool) or not isinstance(n_streams, int) or n_streams < 1:
        raise ValueError(f"n_streams must be a positive int, found {n_streams!r}")
    length = data.numel() // n_streams
    if length == 0:
        raise ValueError(f"cannot cut {data.numel()} tokens into {n_streams} non-empty streams")
    dropped = data.numel() - length * n_streams
    if dropped:
        logger.debug("batchify: dropping the last %d of %d tokens", dropped, data.numel())
    return data[: length * n_streams].view(n_streams, length)


class Window(NamedTuple):
    """One training window: score ``output[:, -n_scored:]`` against ``target[:, -n_scored:]``."""

    input: torch.Tensor  #: (n_streams, t) int64
    target: torch.Tensor  #: (n_streams, t) int64, ``input`` shifted one step ahead
    n_scored: int  #: the last ``n_scored`` positions are scored; the rest is history


class HistoryWindows:
    """Iterable of :class:`Window` over streams, with ``len()``; see :func:`history_windows`."""

    def __init__(self, streams: torch.Tensor, seq_len: int, valid_len: int, score_warmup: bool) -> None:
        if not isinstance(streams, torch.Tensor) or streams.dim() != 2:
            raise TypeError(f"streams must be a 2-D tensor (n_streams, L), found "
                            f"{getattr(streams, 'shape', type(streams).__name__)}")
        if streams.shape[1] < 2:
            raise ValueError(f"streams need length >= 2 (an input and a target), found {streams.shape[1]}")
        for name, v in (("seq_len", seq_len), ("valid_len", valid_len)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, found {v!r}")
        if valid_len > seq_len:
            raise ValueError(f"valid_len must be <= seq_len, found valid_len={valid_len} > seq_len={seq_len}")
        self.streams, self.seq_len, self.valid_len = streams, seq_len, valid_len
        self.score_warmup = score_warmup
        # Window k ends (exclusively, in input positions) at min(seq_len + k*valid_len, P).
        n_pred = streams.shape[1] - 1
        self._ends = list(range(seq_len, n_pred, valid_len)) + [n_pred] if seq_len < n_pred else [n_pred]

    def __len__(self) -> int:
        return len(self._ends)

    def __iter__(self) -> Iterator[Window]:
        prev = 0
        history = self.seq_len - self.valid_len
        for k, end in enumerate(self._ends):
            start = max(0, end - self.seq_len)
            n_scored = end - prev
            if k == 0 and not self.score_warmup:
                n_scored = max(0, end - history)
                if n_scored == 0:
                    prev = end
                    continue
            yield Window(self.streams[:, start:end], self.streams[:, start + 1:end + 1], n_scored)
            prev = end


def history_windows(
    streams: torch.Tensor, seq_len: int, valid_len: int, *, score_warmup: bool = True
) -> HistoryWindows:
    """Windows for "effective history" training and evaluation (Bai et al., 2018, Sec. 5.3).

    Each window feeds up to ``seq_len`` inputs and scores only its last ``n_scored``
    predictions (``valid_len`` for every full window); the earlier positions are history
    that gives the scored ones context. Windows advance by ``valid_len``, and every target
    position ``1 .. L-1`` of the streams is scored exactly once, so the mean loss over all
    windows (weighted by ``n_scored``) is the loss of the whole text. The last window keeps
    a full ``seq_len`` of history and scores only the positions not scored yet.

    Args:
        streams: int64 ``(n_streams, L)`` from :func:`batchify`.
        seq_len: inputs per window (reference: 80 words, 400 characters, 100 for LAMBADA).
        valid_len: scored positions per window (reference: 40, 320, 50).
        score_warmup: the first window has no earlier history; ``True`` scores all of its
            positions (every target scored once). ``False`` scores only its last
            ``valid_len`` like the reference code, which never scores the first
            ``seq_len - valid_len`` targets.

    Returns:
        An iterable of :class:`Window` ``(input, target, n_scored)`` with ``len()``.

    Example::

        >>> s = batchify(torch.arange(12), 2)           # two streams of 6
        >>> [(w.input.shape[1], w.n_scored) for w in history_windows(s, 3, 2)]
        [(3, 3), (3, 2)]
    """
    return HistoryWindows(streams, seq_len, valid_len, score_warmup)
