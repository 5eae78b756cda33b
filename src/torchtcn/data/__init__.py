"""Data for the Bai et al. (2018) benchmark suite: loaders, checksums, downloads, synthetic tasks.

Real data sets are read from a data directory (``data_dir=`` / ``--data-dir``, the
environment variable ``TORCHTCN_DATA``, or ``../shared/data``; see
:mod:`torchtcn.data.paths`), verified against known checksums, and can be downloaded
with ``download=True`` by users with internet access.

==========================  ===========================================================
task                        loader
==========================  ===========================================================
adding problem              :func:`adding_problem` (synthetic, seeded)
copy memory                 :func:`copy_memory` (synthetic, seeded)
sequential / permuted MNIST :func:`sequential_mnist`, :func:`permutation`, :func:`load_mnist`
polyphonic music            :func:`load_piano_rolls` (JSB_Chorales, Nottingham, any .mat)
word / char PTB             :func:`load_ptb`
text8                       :func:`load_text8`
Wikitext-103                :func:`load_wikitext103`
LAMBADA                     :func:`load_lambada`, :func:`collate_passages`
any text corpus             :func:`load_text_corpus`
language-model batching     :func:`batchify`, :func:`history_windows`
==========================  ===========================================================

Example::

    >>> from torchtcn.data import adding_problem
    >>> x, y = adding_problem(32, 600, generator=0)
    >>> x.shape, y.shape
    (torch.Size([32, 2, 600]), torch.Size([32, 1]))
"""

from .checksums import KNOWN_MD5, content_md5, known_md5, verify
from .download import DATASETS, download
from .lambada import LambadaData, LambadaPassage, collate_passages, load_lambada
from .mnist import MNIST_MEAN, MNIST_STD, load_mnist, permutation, read_idx, sequential_mnist
from .music import load_piano_rolls
from .paths import ENV_VAR, find_file, resolve_data_dir
from .series import SeriesData, load_series_csv
from .synthetic import adding_problem, copy_memory
from .text import (
    EOS,
    UNK,
    Corpus,
    Dictionary,
    Window,
    batchify,
    history_windows,
    load_ptb,
    load_text8,
    load_text_corpus,
    load_wikitext103,
)

__all__ = [
    "ENV_VAR",
    "EOS",
    "KNOWN_MD5",
    "DATASETS",
    "MNIST_MEAN",
    "MNIST_STD",
    "UNK",
    "Corpus",
    "Dictionary",
    "LambadaData",
    "LambadaPassage",
    "SeriesData",
    "Window",
    "adding_problem",
    "batchify",
    "collate_passages",
    "content_md5",
    "copy_memory",
    "download",
    "find_file",
    "history_windows",
    "known_md5",
    "load_lambada",
    "load_mnist",
    "load_piano_rolls",
    "load_series_csv",
    "load_ptb",
    "load_text8",
    "load_text_corpus",
    "load_wikitext103",
    "permutation",
    "read_idx",
    "resolve_data_dir",
    "sequential_mnist",
    "verify",
]
