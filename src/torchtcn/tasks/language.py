"""Language modelling: character- and word-level PTB, user text files, text8, Wikitext-103,
and LAMBADA (scored on the last word of each passage, which is never fed as input).

Training follows the paper's "effective history" scheme (Sec. 5.3): the corpus is cut into
``batch_size`` contiguous streams (:func:`torchtcn.data.batchify`), each step reads a window
of ``seq_len`` tokens and is scored on its last ``valid_len`` predictions only; the earlier
positions are context (:func:`torchtcn.data.history_windows`). Every target of each stream
is scored exactly once, so the validation/test numbers are those of the whole text but for
fewer than 2 x ``eval_batch_size`` tokens: the first token of each stream (no predecessor in
it) and the fewer than ``eval_batch_size`` tokens ``batchify`` drops at the end (9 of the
82,429 word targets of PTB test at ``eval_batch_size=10``, as in the reference code).

One dataset item is one stream of one window (index ``window * n_streams + stream``): a batch
is a whole window, and a data-parallel run splits it by streams.

TCN settings are Table 2's; the tied decoder needs the last block's width equal to the
embedding (``channels[-1] == emsize``), as in the reference code. Table 3 gives the word-PTB
LSTM (3x700, SGD lr 30, clip 0.3, dropout 0.4) and the text8 LSTM (1x1024, Adam 1e-2); the
other recurrent presets are our size-matched choices.
"""

from __future__ import annotations

import hashlib
import json

import torch
import torch.nn.functional as F

from ..data import batchify, collate_passages, history_windows, load_lambada, load_ptb
from ..data import load_text8, load_text_corpus, load_wikitext103
from ..data.text import TEXT8_SPLIT
from ..validation import as_int
from . import register_task
from .base import Paper, Task, language_model

#: ``model.safetensors`` metadata of a trained language model: its symbols (JSON list, id order)
VOCABULARY_METADATA_KEY = "torchtcn.vocabulary"


class WindowDataset:
    """Effective-history windows over ``n_streams`` streams; ``batch(idx)`` -> ``(input, target,
    n_scored)`` for the streams of one window (``idx`` must not span two windows)."""

    def __init__(self, streams: torch.Tensor, seq_len: int, valid_len: int, symbols: list[str]):
        self.streams = streams  # (n_streams, L), from batchify
        self.n_streams = streams.shape[0]
        self.windows = list(history_windows(self.streams, seq_len, valid_len))
        self.symbols = symbols  # the vocabulary, in id order
        self.vocab_size = len(symbols)

    def __len__(self) -> int:
        return len(self.windows) * self.n_streams

    def batch(self, idx: torch.Tensor):
        k = idx // self.n_streams
        if len(idx) == 0 or bool((k != k[0]).any()):
            raise ValueError(
                f"a language-model batch must hold the {self.n_streams} streams of one window; "
                f"got items of windows {sorted(set(k.tolist()))[:5]} (batch_size must equal the "
                "number of streams and the order must not be shuffled)")
        w = self.windows[int(k[0])]
        s = idx % self.n_streams
        return w.input[s], w.target[s], w.n_scored


class PassageDataset:
    """LAMBADA passages, sorted by length so that a batch needs little padding;
    ``batch(idx) -> (inputs, targets)`` with every context ending at the last column."""

    def __init__(self, passages, pad_id: int, vocab_size: int, max_len: int | None):
        if max_len is not None:  # checked here, before training, not at the first evaluation
            max_len = as_int("passage_len", max_len)
        self.passages = sorted(passages, key=lambda p: p.context.numel())
        self.pad_id, self.vocab_size, self.max_len = pad_id, vocab_size, max_len

    def __len__(self) -> int:
        return len(self.passages)

    def batch(self, idx: torch.Tensor):
        inputs, targets, _ = collate_passages([self.passages[i] for i in idx.tolist()], self.pad_id,
                                              length=self.max_len)
        return inputs, targets


def _windows(split: str, tokens, n_streams: int, data: dict, symbols: list[str]) -> WindowDataset:
    """The split's windows; a split too short for its streams is named in the error."""
    try:
        streams = batchify(tokens, n_streams)
    except ValueError as e:
        setting = "batch_size" if split == "train" else "eval_batch_size"
        raise ValueError(f"the {split} split: {e} (one stream per example of a batch: "
                         f"{setting}={n_streams})") from None
    try:
        return WindowDataset(streams, data["seq_len"], data["valid_len"], symbols)
    except ValueError as e:  # seq_len / valid_len: the message names the setting
        raise ValueError(f"the {split} split: {e}") from None


class LanguageTask(Task):
    """Next-token prediction with a (tied) language model; bpc or perplexity."""

    loader = None  # (spec, data_dir) -> Corpus; set per registered task

    @property
    def is_language_model(self) -> bool:
        return True

    def load(self, spec, data_dir=None):
        corpus = type(self).loader(spec, data_dir)
        d, t = spec.data, spec.train
        symbols = corpus.dictionary.symbols
        eval_streams = t.eval_batch_size or t.batch_size
        streams = {"train": t.batch_size, "valid": eval_streams, "test": eval_streams}
        return {split: _windows(split, getattr(corpus, split), streams[split], d, symbols)
                for split in ("train", "valid", "test")}

    def build_model(self, spec, datasets):
        return language_model(spec, datasets["train"].vocab_size)

    def model_metadata(self, datasets):
        # the ids the model reads and predicts: without them a saved model is unusable
        return {VOCABULARY_METADATA_KEY: json.dumps(datasets["train"].symbols)}

    def data_signature(self, datasets):
        # the vocabulary is rebuilt from the files at every load: edited files remap the ids
        symbols = datasets["train"].symbols
        digest = hashlib.sha256(json.dumps(symbols).encode()).hexdigest()
        return {"vocabulary_size": len(symbols), "vocabulary_sha256": digest}

    def step(self, model, batch):
        inputs, targets, n_scored = batch
        logits = model(inputs)[:, :, -n_scored:]
        total = F.cross_entropy(logits, targets[:, -n_scored:], reduction="sum")
        count = targets.shape[0] * n_scored
        return total / count, {"loss": total.item(), "count": count}


class LambadaTask(LanguageTask):
    """Train on the novels; score the prediction of each passage's last word from its context."""

    def load(self, spec, data_dir=None):
        d, t = spec.data, spec.train
        data = load_lambada(d["data"], data_dir=data_dir if d["data"] is None else None,
                            on_oov_target="skip", max_train_files=d["max_train_files"])
        symbols = data.dictionary.symbols
        vocab = len(symbols)
        return {
            "train": _windows("train", data.train, t.batch_size, d, symbols),
            "valid": PassageDataset(data.valid, data.pad_id, vocab, d["passage_len"]),
            "test": PassageDataset(data.test, data.pad_id, vocab, d["passage_len"]),
        }

    def step(self, model, batch):
        if len(batch) == 3:  # training windows
            return super().step(model, batch)
        inputs, targets = batch
        logits = model(inputs)[:, :, -1]
        total = F.cross_entropy(logits, targets, reduction="sum")
        correct = (logits.argmax(1) == targets).sum().item()
        return total / len(targets), {"loss": total.item(), "count": len(targets), "correct": correct}

    def extra_metrics(self, totals):
        if "correct" not in totals:
            return {}
        return {"accuracy": 100.0 * totals["correct"] / totals["count"]}


def _require(spec, what: str):
    if spec.data["data"] is None:
        raise ValueError(f"task {spec.task!r} needs {what}: pass --data PATH")
    return spec.data["data"]


def _task(cls, name, description, metric, paper, loader, train, data, models, downloads=()):
    task_cls = type(f"{cls.__name__}_{name}", (cls,), {"loader": staticmethod(loader)})
    register_task(task_cls(name=name, description=description, metric=metric, paper=paper,
                           train_preset=train, data_preset=data, model_presets=models,
                           shuffle=False, downloads=downloads, predicts_ahead=True))


# Trainer presets: SGD, annealed as the reference scripts do (char: /10 when valid is worse than
# all of the last 3 epochs after epoch 5; word and LAMBADA: worse than or equal to all of the
# last 5, /2 and /10).
_CHAR_TRAIN = {"epochs": 100, "batch_size": 32, "eval_batch_size": 10, "optimizer": "sgd", "lr": 4.0,
               "clip": 0.15, "schedule": "regress", "lr_factor": 0.1, "lr_window": 3, "lr_after": 5}
_WORD_TRAIN = {"epochs": 100, "batch_size": 16, "eval_batch_size": 10, "optimizer": "sgd", "lr": 4.0,
               "clip": 0.4, "schedule": "regress", "lr_factor": 0.5, "lr_window": 5, "lr_after": 5,
               "lr_on_tie": True}
_CHAR_DATA = {"seq_len": 400, "valid_len": 320}
_WORD_DATA = {"seq_len": 80, "valid_len": 40}

_CHAR_TCN = {"channels": (450, 450, 100), "kernel_size": 3, "dropout": 0.1, "emsize": 100,
             "embed_dropout": 0.1, "tie_weights": True}
_WORD_TCN = {"channels": (600,) * 4, "kernel_size": 3, "dropout": 0.5, "emsize": 600,
             "embed_dropout": 0.25, "tie_weights": True}
# ~3M parameters for char PTB (untied: a 100-wide embedding cannot tie to a wide LSTM).
_RNN_CHAR_TRAIN = {"optimizer": "adam", "lr": 2e-3, "clip": 0.15, "schedule": "plateau",
                   "lr_factor": 0.1, "lr_patience": 2}
_CHAR_RNN = {
    "lstm": {"hidden_size": 800, "emsize": 100, "tie_weights": False, "train": _RNN_CHAR_TRAIN},
    "gru": {"hidden_size": 920, "emsize": 100, "tie_weights": False, "train": _RNN_CHAR_TRAIN},
    "rnn": {"hidden_size": 1650, "emsize": 100, "tie_weights": False, "train": _RNN_CHAR_TRAIN},
}
# Table 3: word PTB LSTM 3x700, dropout 0.4, clip 0.3, SGD lr 30, embedding 700 (tied).
_RNN_WORD_TRAIN = {"optimizer": "sgd", "lr": 30.0, "clip": 0.3}
_WORD_RNN = {m: {"hidden_size": 700, "num_layers": 3, "dropout": 0.4, "emsize": 700,
                 "tie_weights": True, "train": _RNN_WORD_TRAIN} for m in ("lstm", "gru", "rnn")}


def _ptb(level):
    return lambda spec, data_dir: load_ptb(data_dir, level)


def _user_corpus(level):
    return lambda spec, data_dir: load_text_corpus(_require(spec, "a folder with train/valid/test text files"),
                                                   level, oov="unk")


_task(LanguageTask, "char_ptb", "character-level Penn Treebank (bits per character)", "bpc",
      Paper(tcn=1.31, lstm=1.36, gru=1.37, rnn=1.48, size="3M", note="Table 1"), _ptb("char"),
      dict(_CHAR_TRAIN), dict(_CHAR_DATA), {"tcn": _CHAR_TCN, **_CHAR_RNN}, downloads=("ptb",))
_task(LanguageTask, "word_ptb", "word-level Penn Treebank (perplexity)", "perplexity",
      Paper(tcn=88.68, lstm=78.93, gru=92.48, rnn=114.50, size="13M", note="Table 1"), _ptb("word"),
      dict(_WORD_TRAIN), dict(_WORD_DATA), {"tcn": _WORD_TCN, **_WORD_RNN}, downloads=("ptb",))
_task(LanguageTask, "char_lm", "character-level LM on your text files (--data DIR with train/valid/test)",
      "bpc", Paper(note="user data: no paper number"), _user_corpus("char"),
      dict(_CHAR_TRAIN), {**_CHAR_DATA, "data": None}, {"tcn": _CHAR_TCN, **_CHAR_RNN})
_task(LanguageTask, "word_lm", "word-level LM on your text files (--data DIR with train/valid/test)",
      "perplexity", Paper(note="user data: no paper number"), _user_corpus("word"),
      dict(_WORD_TRAIN), {**_WORD_DATA, "data": None}, {"tcn": _WORD_TCN, **_WORD_RNN})
_task(LanguageTask, "text8", "text8, character level, 90M/5M/5M (bits per character)", "bpc",
      Paper(tcn=1.45, lstm=1.50, gru=1.53, rnn=1.69, size="5M", note="Table 1"),
      lambda spec, data_dir: load_text8(spec.data["data"], data_dir=data_dir,
                                        split_sizes=tuple(spec.data["split_sizes"])),
      {**_CHAR_TRAIN, "batch_size": 32}, {**_CHAR_DATA, "data": None, "split_sizes": TEXT8_SPLIT},
      {"tcn": {**_CHAR_TCN, "channels": (520,) * 4 + (100,), "kernel_size": 2},
       "lstm": {"hidden_size": 1024, "emsize": 100, "tie_weights": False,
                "train": {"optimizer": "adam", "lr": 1e-2, "clip": 0.15, "schedule": "none"}},
       "gru": _CHAR_RNN["gru"], "rnn": _CHAR_RNN["rnn"]}, downloads=("text8",))
_task(LanguageTask, "wikitext103", "Wikitext-103, word level (perplexity)", "perplexity",
      Paper(tcn=45.19, lstm=48.4, size="148M",
            note="Table 1 (LSTM: Grave et al. 2017); size: Table 4"),
      lambda spec, data_dir: load_wikitext103(spec.data["data"] or data_dir),
      dict(_WORD_TRAIN), {**_WORD_DATA, "data": None},
      {"tcn": {**_WORD_TCN, "channels": (1000,) * 4 + (400,), "emsize": 400, "dropout": 0.4,
               "embed_dropout": 0.1},
       **{m: {**kw, "hidden_size": 400, "emsize": 400} for m, kw in _WORD_RNN.items()}},
      downloads=("wikitext103",))
register_task(LambadaTask(
    name="lambada", description="LAMBADA: perplexity of each passage's last word, from its context",
    metric="perplexity",
    paper=Paper(tcn=1279, lstm=4186, rnn=14725, size="56M",
                note="Table 1 (LSTM: Grave et al. 2017); size: Table 4"),
    train_preset={**_WORD_TRAIN, "batch_size": 20, "eval_batch_size": 64, "lr": 4.0, "lr_factor": 0.1},
    data_preset={"seq_len": 100, "valid_len": 50, "passage_len": 100, "data": None, "max_train_files": None},
    model_presets={"tcn": {"channels": (500,) * 5, "kernel_size": 4, "dropout": 0.1, "emsize": 500,
                           "embed_dropout": 0.1, "tie_weights": True},
                   **{m: {**kw, "hidden_size": 500, "emsize": 500} for m, kw in _WORD_RNN.items()}},
    shuffle=False, downloads=("lambada",), predicts_ahead=True,
))
