"""The synthetic stress tests: the adding problem (T = 200/400/600) and copy memory
(T = 500/1000/2000), with the TCN settings of the paper's Table 2.

Data come from :mod:`torchtcn.data.synthetic` with fixed data seeds (``data_seed``), so every
model of a comparison sees the same sequences. Training, validation and test sets are drawn
from independent generators (seeds ``data_seed``, ``+1``, ``+2``).

Recurrent baselines are sized to the paper's model-size column (~70K adding, ~16K copy);
they use the TCN's optimizer with gradient clipping at 1.0 (the paper's Table 3 is partial:
our choice, documented in ``docs/benchmarks.md``).
"""

from __future__ import annotations

import torch.nn.functional as F

from ..data import adding_problem, copy_memory
from . import register_task
from .base import ArrayDataset, Paper, RunSpec, Task, classification_totals, sequence_model

# Table 2: T -> (kernel_size, levels, hidden).
ADDING_TCN = {200: (6, 7, 27), 400: (7, 7, 27), 600: (8, 8, 24)}
COPY_TCN = {500: (6, 9, 10), 1000: (8, 8, 10), 2000: (8, 9, 10)}
# ~70K (adding, 2 inputs) and ~16K (copy, 10 classes) parameters with the head included.
ADDING_RNN = {"lstm": {"hidden_size": 130}, "gru": {"hidden_size": 150}, "rnn": {"hidden_size": 262}}
COPY_RNN = {"lstm": {"hidden_size": 60}, "gru": {"hidden_size": 70}, "rnn": {"hidden_size": 120}}
RNN_TRAIN = {"clip": 1.0}


def _rnn_presets(sizes: dict) -> dict:
    return {m: {**kw, "train": dict(RNN_TRAIN)} for m, kw in sizes.items()}


def _splits(spec: RunSpec, make):
    d = spec.data
    seeds = (d["data_seed"], d["data_seed"] + 1, d["data_seed"] + 2)
    sizes = (d["n_train"], d["n_valid"], d["n_test"])
    for key, n in zip(("n_train", "n_valid", "n_test"), sizes):  # name the setting, not make()'s `n`
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"{key} must be an int >= 1, found {n!r}")
    return {s: ArrayDataset(*make(n, seed)) for s, n, seed in zip(("train", "valid", "test"), sizes, seeds)}


class AddingTask(Task):
    """Regress the sum of the two marked values; MSE on the last step's output."""

    def load(self, spec, data_dir=None):
        T, placement = spec.data["T"], spec.data["placement"]
        return _splits(spec, lambda n, seed: adding_problem(n, T, seed, placement=placement))

    def build_model(self, spec, datasets):
        return sequence_model(spec, in_channels=2, head="last_step", out_features=1)

    def step(self, model, batch):
        x, y = batch
        sq = F.mse_loss(model(x), y, reduction="sum")
        return sq / y.numel(), {"loss": sq.item(), "count": y.numel()}


class CopyTask(Task):
    """Recall 10 digits after T blanks; cross entropy over all T+20 steps (Table 1's loss)."""

    def load(self, spec, data_dir=None):
        T, copy_len = spec.data["T"], spec.data["copy_len"]
        return _splits(spec, lambda n, seed: copy_memory(n, T, copy_len, generator=seed))

    def build_model(self, spec, datasets):
        return sequence_model(spec, in_channels=1, head="per_step", out_features=10)

    def step(self, model, batch):
        x, y = batch
        logits = model(x)
        loss, totals = classification_totals(logits, y)
        # The paper's Sec. 5.4 reports accuracy on the recalled digits only.
        # copy_len digits + (copy_len + 1) markers are the only non-zero inputs.
        k = (int((x[0, 0] != 0).sum()) - 1) // 2
        last = (logits[:, :, -k:].argmax(1) == y[:, -k:]).sum().item()
        totals.update({"correct_recall": last, "count_recall": y[:, -k:].numel()})
        del totals["correct"]
        return loss, totals

    def extra_metrics(self, totals):
        return {"recall_accuracy": 100.0 * totals["correct_recall"] / totals["count_recall"]}


ADDING_PAPER = {600: Paper(tcn=5.8e-5, lstm=0.164, gru=5.3e-5, rnn=0.177, size="70K",
                           note="Table 1; the paper's number is the mean test MSE of the last 3 epochs")}
COPY_PAPER = {1000: Paper(tcn=3.5e-5, lstm=0.0204, gru=0.0197, rnn=0.0202, size="16K", note="Table 1")}

for _T, (_k, _n, _h) in ADDING_TCN.items():
    register_task(AddingTask(
        name=f"adding{_T}",
        description=f"adding problem, T={_T}: MSE of the sum of two marked numbers",
        metric="mse",
        paper=ADDING_PAPER.get(_T, Paper(size="70K", note=f"Table 1 reports T=600 only; T={_T} is in Fig. 2")),
        # Cosine annealing from the paper's Adam 2e-3 (the paper: constant). Chosen on the
        # validation MSE of the last 3 epochs at T=600: constant 7.5e-4 (the test MSE swung
        # between 1e-4 and 1.7e-3 from epoch to epoch), /10 after epoch 5 9.9e-5, cosine 9.2e-5.
        # 15 epochs helped at T=200 but left the T=600 TCN stuck at 0.081 (report notes).
        train_preset={"epochs": 10, "batch_size": 32, "eval_batch_size": 500, "optimizer": "adam",
                      "lr": 2e-3, "schedule": "cosine", "test_every_epoch": True},
        data_preset={"T": _T, "n_train": 50_000, "n_valid": 1_000, "n_test": 1_000, "data_seed": 0,
                     "placement": "anywhere"},
        # The TCN starts the cosine from the reference script's lr 4e-3: validation last-3 mean
        # at T=600 5.6e-5, against 9.2e-5 from 2e-3; 5e-3 and 6e-3 stalled at the 0.167 plateau.
        # Then a gradient-norm clip of 1.0 (the baselines' clip; the paper: none): 2.5e-5.
        # The LSTM keeps 2e-3 (T=200: 5.9e-5, against 6.1e-5 from 4e-3).
        model_presets={"tcn": {"channels": (_h,) * _n, "kernel_size": _k, "dropout": 0.0,
                               "train": {"lr": 4e-3, "clip": 1.0}},
                       **_rnn_presets(ADDING_RNN)},
        needs_data=False, report_last_k=3,
    ))

for _T, (_k, _n, _h) in COPY_TCN.items():
    register_task(CopyTask(
        name=f"copy{_T}",
        description=f"copy memory, T={_T}: recall 10 digits after {_T} blanks (cross entropy)",
        metric="cross_entropy",
        paper=COPY_PAPER.get(_T, Paper(size="16K", note=f"Table 1 reports T=1000 only; T={_T} is in Fig. 4")),
        train_preset={"epochs": 50, "batch_size": 32, "eval_batch_size": 500, "optimizer": "rmsprop",
                      "lr": 5e-4, "clip": 1.0},
        data_preset={"T": _T, "copy_len": 10, "n_train": 10_000, "n_valid": 1_000, "n_test": 1_000,
                     "data_seed": 0},
        # Dropout 0.0, as in the reference script that produced Table 1 (Table 2 says 0.05).
        # Best validation loss at T=1000 over 50 epochs: 5.5e-5 with 0.05, 2.3e-7 with 0.0.
        model_presets={"tcn": {"channels": (_h,) * _n, "kernel_size": _k, "dropout": 0.0},
                       **_rnn_presets(COPY_RNN)},
        needs_data=False,
    ))
