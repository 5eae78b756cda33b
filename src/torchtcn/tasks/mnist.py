"""Sequential and permuted MNIST: classify a digit from its 784 pixels read one at a time.

Data from :func:`torchtcn.data.sequential_mnist`. The validation set is the last ``n_valid``
training images (the paper and the reference code had none and watched the test set); the
permutation of P-MNIST is drawn from the fixed seed ``perm_seed``, so every run and every
model sees the same one (the reference code drew it unseeded).

TCN: 8 blocks of 25 channels, k=7 (Table 2, 66,910 parameters). LSTM: 1x130 with RMSprop
1e-3 (Table 3). GRU and RNN: sized to ~70K parameters, same optimizer, clipping at 1.0.
Training is the reference script's: 20 epochs, Adam 2e-3 divided by 10 after epoch 10 (with
10 epochs that step would never happen; seq-MNIST validation was 98.2% at epoch 5 on 2e-3).
"""

from __future__ import annotations

from ..data import permutation, sequential_mnist
from . import register_task
from .base import ArrayDataset, Paper, Task, classification_totals, sequence_model

RNN_TRAIN = {"optimizer": "rmsprop", "lr": 1e-3, "clip": 1.0}


class MnistTask(Task):
    """10-way classification from the last step's output; accuracy in percent."""

    permuted: bool = False

    def load(self, spec, data_dir=None):
        perm = permutation(spec.data["perm_seed"]) if self.permuted else None
        x, y = sequential_mnist(data_dir, "train", permutation=perm)
        xt, yt = sequential_mnist(data_dir, "test", permutation=perm)
        n_valid = spec.data["n_valid"]
        if not 0 < n_valid < len(x):
            raise ValueError(f"n_valid must be in 1..{len(x) - 1}, got {n_valid}")
        return {"train": ArrayDataset(x[:-n_valid], y[:-n_valid]),
                "valid": ArrayDataset(x[-n_valid:], y[-n_valid:]),
                "test": ArrayDataset(xt, yt)}

    def build_model(self, spec, datasets):
        return sequence_model(spec, in_channels=1, head="last_step", out_features=10)

    def step(self, model, batch):
        x, y = batch
        return classification_totals(model(x), y)

    def extra_metrics(self, totals):
        return {}


class PermutedMnistTask(MnistTask):
    permuted = True


def _register(cls, name, description, paper, tcn_dropout, tcn_clip=None):
    register_task(cls(
        name=name, description=description, metric="accuracy", paper=paper, downloads=("mnist",),
        train_preset={"epochs": 20, "batch_size": 64, "eval_batch_size": 1000, "optimizer": "adam",
                      "lr": 2e-3, "schedule": "step", "lr_step": 10, "lr_factor": 0.1},
        data_preset={"n_valid": 5_000, **({"perm_seed": 0} if cls.permuted else {})},
        model_presets={
            "tcn": {"channels": (25,) * 8, "kernel_size": 7, "dropout": tcn_dropout,
                    **({"train": {"clip": tcn_clip}} if tcn_clip else {})},
            "lstm": {"hidden_size": 130, "train": RNN_TRAIN},
            "gru": {"hidden_size": 150, "train": RNN_TRAIN},
            "rnn": {"hidden_size": 258, "train": RNN_TRAIN},
        },
    ))


# TCN dropout: Table 2 says 0.0, pmnist_test.py defaults to 0.05. On seq-MNIST both reached
# 99.06% validation accuracy (epoch 12); 0.05 had the lower validation loss there (0.037
# against 0.045), so it breaks the tie. P-MNIST keeps Table 2's 0.0 (not rerun with 0.05).
# Then the gradient-norm clip of 1.0 that the adding TCN and the baselines use (Table 2: none):
# best validation accuracy 99.12% (epoch 20) against 99.06%, so seq-MNIST clips (test 98.94%
# against 98.97%); P-MNIST was not rerun with it.
_register(MnistTask, "seq_mnist", "sequential MNIST: classify a digit from its 784 pixels in order",
          Paper(tcn=99.0, lstm=87.2, gru=96.2, rnn=21.5, size="70K", note="Table 1"), tcn_dropout=0.05,
          tcn_clip=1.0)
_register(PermutedMnistTask, "pmnist", "permuted MNIST: the pixels in one fixed random order",
          Paper(tcn=97.2, lstm=85.7, gru=87.3, rnn=25.3, size="70K", note="Table 1"), tcn_dropout=0.0)
