"""LAMBADA (Paperno et al., 2016): predict the last word of a passage.

Release layout (``lambada-dataset.tar.gz``)::

    train-novels/<genre>/<book>.txt        training text (novels)
    lambada_development_plain_text.txt     one passage a line; its last word is the target
    lambada_test_plain_text.txt
    lambada_vocabulary_sorted.txt          one word a line (the reference code's 93,215 words;
                                           the current release's ``lambada-vocab-2.txt`` works too)

Preprocessing follows the reference code: the vocabulary file plus ``<eos>``; a token
outside it is remapped (n't->not, 's->is, 're->are, 've->have, wo->will), then stripped of
punctuation, then dropped if still unknown. Training lines get ``<eos>``.

Evaluation differs from the reference code on purpose. The reference fed the whole
passage, target included, and scored ``output[:, -1]`` (the prediction of the token
*after* the target) against the target: an off-by-one. Here each passage is split into
``context`` (every token but the last) and ``target`` (the last word's id); the model
reads only the context, and its prediction at the last context position is scored.

Example::

    >>> from torchtcn.data import load_lambada, collate_passages
    >>> data = load_lambada("data/lambada")  # doctest: +SKIP
    >>> inputs, targets, lengths = collate_passages(data.test[:8], pad_id=data.pad_id)  # doctest: +SKIP
    >>> logits = model(inputs)[:, :, -1]  # doctest: +SKIP
    >>> loss = torch.nn.functional.cross_entropy(logits, targets)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from .download import locate_or_download
from .paths import PathLike, how_to_get_data, resolve_data_dir, search_dirs
from .text import EOS, Dictionary, read_text, tokenize_words

logger = logging.getLogger(__name__)

VOCAB_FILES = ("lambada_vocabulary_sorted.txt", "lambada-vocab-2.txt")
DEV_FILE = "lambada_development_plain_text.txt"
TEST_FILE = "lambada_test_plain_text.txt"
TRAIN_DIR = "train-novels"

# Contractions the reference code rewrites because the vocabulary lacks them.
_REMAP = {"n't": "not", "'s": "is", "'re": "are", "'ve": "have", "wo": "will"}
_PUNCT = re.compile(r"[^\w\s]")


class LambadaPassage(NamedTuple):
    """One evaluation passage: the model reads ``context`` and must predict ``target``."""

    context: torch.Tensor  #: int64 (n_context,), the passage without its last word
    target: int  #: id of the last word


@dataclass(frozen=True, eq=False)  # holds tensors: compare fields explicitly
class LambadaData:
    """LAMBADA ready for a language model.

    Attributes:
        dictionary: the vocabulary file's words plus ``<eos>``.
        train: int64 ``(n_tokens,)``, the novels as one stream (``<eos>`` after each line).
        valid, test: lists of :class:`LambadaPassage` (development and test sets).
        skipped: passages left out per split because their target is out of vocabulary
            (only with ``on_oov_target="skip"``).
    """

    dictionary: Dictionary
    train: torch.Tensor
    valid: list[LambadaPassage]
    test: list[LambadaPassage]
    skipped: dict[str, int]

    @property
    def pad_id(self) -> int:
        """Id used to left-pad passages: ``<eos>``, the natural 'text before this' token.

        (The reference padded with id 0, an ordinary word of the vocabulary.)
        """
        return self.dictionary.index(EOS)


class _Normaliser:
    """Token -> id with the reference remapping, cached per distinct out-of-vocabulary token."""

    def __init__(self, dictionary: Dictionary) -> None:
        self.d = dictionary
        self.cache: dict[str, int] = {}

    def one(self, tok: str) -> int:
        if tok in self.d:
            return self.d.index(tok)
        hit = self.cache.get(tok)
        if hit is None:
            cand = _REMAP.get(tok, tok)
            if cand not in self.d:
                cand = _PUNCT.sub("", cand)
            hit = self.d.index(cand) if cand and cand in self.d else -1
            self.cache[tok] = hit
        return hit

    def many(self, tokens: Sequence[str]) -> np.ndarray:
        ids = self.d.lookup_tokens(tokens)  # fast path for the (vast) in-vocabulary majority
        for i in np.flatnonzero(ids < 0):
            ids[i] = self.one(tokens[i])
        return ids[ids >= 0]


def _find_root(path: Path) -> Path:
    """The folder holding the dev file: ``path`` itself or a sub-folder (e.g. ``lambada-dataset/``)."""
    if (path / DEV_FILE).is_file():
        return path
    for sub in sorted(p for p in path.iterdir() if p.is_dir()) if path.is_dir() else []:
        if (sub / DEV_FILE).is_file():
            return sub
    raise FileNotFoundError(
        f"{path}: no {DEV_FILE} here or in a sub-folder. Download the LAMBADA release "
        "(load_lambada(..., download=True) or https://zenodo.org/record/2630551) and pass its folder."
    )


def _search_root(data_dir: PathLike | None) -> Path:
    """The release under ``lambada/`` of the first data folder that holds it (see
    :func:`~torchtcn.data.paths.search_dirs`), as the other loaders look for their files."""
    tried = []
    for folder in search_dirs(data_dir):
        try:
            return _find_root(folder / "lambada")
        except FileNotFoundError:
            tried.append(folder / "lambada")
    listing = "\n".join(f"  - {p}" for p in tried)
    raise FileNotFoundError(f"no LAMBADA release ({DEV_FILE}) found. Looked in:\n{listing}\n"
                            + how_to_get_data())


def read_vocabulary(path: PathLike) -> Dictionary:
    """A LAMBADA vocabulary file (first field of each non-empty line) plus ``<eos>``."""
    words = [line.split()[0] for line in read_text(path).split("\n") if line.strip()]
    if not words:
        raise ValueError(f"{path}: empty vocabulary file")
    d = Dictionary(dict.fromkeys(words))
    d.add(EOS)
    return d


def _passages(path: Path, norm: _Normaliser, on_oov_target: str) -> tuple[list[LambadaPassage], int]:
    out, skipped = [], 0
    for lineno, line in enumerate(read_text(path).split("\n"), start=1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) < 2:
            raise ValueError(f"{path}:{lineno}: a passage needs a context and a target word, found {line!r}")
        target = norm.one(tokens[-1])
        if target < 0:
            if on_oov_target == "skip":
                skipped += 1
                continue
            raise ValueError(
                f"{path}:{lineno}: target word {tokens[-1]!r} is not in the vocabulary; pass "
                "on_oov_target='skip' to leave such passages out"
            )
        context = norm.many(tokens[:-1])
        if context.size == 0:
            raise ValueError(f"{path}:{lineno}: no context word of the passage is in the vocabulary")
        out.append(LambadaPassage(torch.from_numpy(context), target))
    if skipped:
        logger.warning("%s: skipped %d passages whose target is out of vocabulary", path, skipped)
    return out, skipped


def load_lambada(
    path: PathLike | None = None,
    *,
    data_dir: PathLike | None = None,
    vocab_file: PathLike | None = None,
    on_oov_target: str = "error",
    max_train_files: int | None = None,
    download: bool = False,
) -> LambadaData:
    """Load LAMBADA: training novels as one token stream, dev/test as (context, target) passages.

    Args:
        path: the release folder (or a folder containing it); ``None``: ``lambada/``
            under ``data_dir``.
        data_dir: the data directory used when ``path`` is ``None`` (see
            :func:`~torchtcn.data.paths.resolve_data_dir`).
        vocab_file: the vocabulary; default the first of ``lambada_vocabulary_sorted.txt``,
            ``lambada-vocab-2.txt`` found in the release folder.
        on_oov_target: ``"error"`` (default) or ``"skip"`` for a passage whose last word
            is not in the vocabulary.
        max_train_files: read only the first N novels (sorted by path), for quick runs.
        download: fetch and extract the release into ``<data_dir>/lambada`` when missing
            (needs internet; only with ``path=None``).

    Returns:
        :class:`LambadaData`.
    """
    if on_oov_target not in ("error", "skip"):
        raise ValueError(f"on_oov_target must be 'error' or 'skip', found {on_oov_target!r}")
    if path is not None:
        if download:
            raise ValueError(
                "download=True puts the release under <data_dir>/lambada; pass data_dir= "
                f"instead of path= (found path={path!r})"
            )
        root = _find_root(Path(path).expanduser())
    elif download:
        data_root = resolve_data_dir(data_dir)
        root = locate_or_download("lambada", lambda: _search_root(data_dir), data_root)
    else:
        root = _search_root(data_dir)
    if vocab_file is None:
        cands = [root / v for v in VOCAB_FILES] + [root.parent / v for v in VOCAB_FILES]
        vocab_file = next((c for c in cands if c.is_file()), None)
        if vocab_file is None:
            raise FileNotFoundError("no LAMBADA vocabulary file; looked for " + ", ".join(map(str, cands)))
    dictionary = read_vocabulary(vocab_file)
    norm = _Normaliser(dictionary)

    train_dir = root / TRAIN_DIR
    files = sorted(train_dir.rglob("*.txt")) if train_dir.is_dir() else []
    if not files:
        raise FileNotFoundError(f"{train_dir}: no training novels (*.txt) found")
    if max_train_files is not None:
        if isinstance(max_train_files, bool) or not isinstance(max_train_files, int) or (
            max_train_files < 1
        ):
            raise ValueError(f"max_train_files must be a positive int or None, got "
                             f"{max_train_files!r}")
        files = files[:max_train_files]
    chunks = [norm.many(tokenize_words(read_text(f))) for f in files]
    train = torch.from_numpy(np.concatenate(chunks)) if chunks else torch.zeros(0, dtype=torch.long)
    valid, sk_v = _passages(root / DEV_FILE, norm, on_oov_target)
    test_path = root / TEST_FILE
    if not test_path.is_file():
        raise FileNotFoundError(f"{test_path}: missing LAMBADA test file")
    test, sk_t = _passages(test_path, norm, on_oov_target)
    logger.info("LAMBADA: %d training tokens, %d dev and %d test passages", train.numel(), len(valid), len(test))
    return LambadaData(dictionary, train, valid, test, {"valid": sk_v, "test": sk_t})


def collate_passages(
    passages: Sequence[LambadaPassage],
    pad_id: int,
    length: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack passages into one batch, left-padded so every context ends at the last column.

    A causal model's output at the last position then predicts each passage's target,
    which is never part of the input.

    Args:
        passages: :class:`LambadaPassage` items.
        pad_id: id written to the left of shorter contexts (``LambadaData.pad_id``). Pad
            tokens inside a model's receptive field do influence its prediction; batch
            passages of similar length, or evaluate one at a time, for exact per-passage
            scores.
        length: columns of the batch; default the longest context. Longer contexts keep
            their last ``length`` tokens (the reference used 100).

    Returns:
        ``inputs`` int64 ``(N, length)``, ``targets`` int64 ``(N,)``, and ``lengths`` int64
        ``(N,)`` (real, unpadded tokens per row).

    Example::

        >>> p = [LambadaPassage(torch.tensor([5, 6, 7]), 8), LambadaPassage(torch.tensor([9]), 3)]
        >>> x, y, n = collate_passages(p, pad_id=0)
        >>> x.tolist(), y.tolist(), n.tolist()
        ([[5, 6, 7], [0, 0, 9]], [8, 3], [3, 1])
    """
    if not passages:
        raise ValueError("passages is empty")
    longest = max(p.context.numel() for p in passages)
    if length is None:
        length = longest
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"length must be a positive int, found {length!r}")
    inputs = torch.full((len(passages), length), pad_id, dtype=torch.long)
    lengths = torch.empty(len(passages), dtype=torch.long)
    for i, p in enumerate(passages):
        ctx = p.context[-length:]
        inputs[i, length - ctx.numel():] = ctx
        lengths[i] = ctx.numel()
    targets = torch.tensor([p.target for p in passages], dtype=torch.long)
    return inputs, targets, lengths
