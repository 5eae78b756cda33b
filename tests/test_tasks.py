"""Task registry, presets (the paper's sizes), override checking, and every task family's
data path on small files written here (music .mat, text corpora, text8, Wikitext-103, LAMBADA)."""

from __future__ import annotations

import math
import zipfile

import numpy as np
import pytest
import torch

import torchtcn
from torchtcn.summary import count_parameters
from torchtcn.tasks import available_tasks, build_run, get_task
from torchtcn.tasks.base import language_model
from torchtcn.train import Trainer

PAPER_TASKS = {"adding200", "adding400", "adding600", "copy500", "copy1000", "copy2000", "seq_mnist",
               "pmnist", "jsb", "nottingham", "char_ptb", "word_ptb", "text8", "wikitext103", "lambada"}
USER_TASKS = {"music", "char_lm", "word_lm"}


def test_every_task_is_registered():
    assert PAPER_TASKS | USER_TASKS <= set(available_tasks())
    with pytest.raises(ValueError, match="unknown task 'jsbb'.*jsb.*nottingham"):
        get_task("jsbb")


# Parameter counts of the presets. The TCN numbers are the reference code's own arithmetic
# (docs/reference: 66,910 / 269,938 / 1,053,238 / 70,369 / 12,530 / 2,222,100 / 14,659,600);
# the recurrent baselines must be within 10% of the paper's model-size column.
TCN_PARAMS = {"seq_mnist": 66_910, "jsb": 269_938, "nottingham": 1_053_238, "adding600": 70_369,
              "copy1000": 12_530, "char_ptb": 2_222_100, "word_ptb": 14_659_600}
PAPER_SIZE = {"seq_mnist": 70e3, "pmnist": 70e3, "adding600": 70e3, "adding200": 70e3, "copy1000": 16e3,
              "jsb": 300e3, "nottingham": 1e6}


def _params(task_name, model):
    task = get_task(task_name)
    spec = task.resolve(model)
    if task.is_language_model:
        return count_parameters(language_model(spec, 50 if task_name.startswith("char") else 10_000))
    return count_parameters(task.build_model(spec, None))


@pytest.mark.parametrize("task_name", sorted(TCN_PARAMS))
def test_tcn_presets_are_table_2(task_name):
    assert _params(task_name, "tcn") == TCN_PARAMS[task_name]


@pytest.mark.parametrize("task_name", sorted(PAPER_SIZE))
@pytest.mark.parametrize("model", ["lstm", "gru", "rnn"])
def test_recurrent_presets_match_the_paper_sizes(task_name, model):
    assert abs(_params(task_name, model) / PAPER_SIZE[task_name] - 1) < 0.10


def test_presets_follow_the_paper_optimizers():
    copy = get_task("copy1000").resolve("tcn")
    assert (copy.train.optimizer, copy.train.lr, copy.train.clip) == ("rmsprop", 5e-4, 1.0)
    assert copy.model_kwargs["dropout"] == 0.0  # copymem_test.py's default (Table 2: 0.05)
    mnist_lstm = get_task("seq_mnist").resolve("lstm")
    assert (mnist_lstm.train.optimizer, mnist_lstm.train.lr, mnist_lstm.model_kwargs["hidden_size"]) == (
        "rmsprop", 1e-3, 130)
    word = get_task("word_ptb").resolve("tcn")
    assert (word.train.optimizer, word.train.schedule, word.train.lr_factor) == ("sgd", "regress", 0.5)
    assert (word.train.lr_window, word.train.lr_after) == (5, 5)
    jsb = get_task("jsb").resolve("tcn").train  # music_test.py: /10 when valid > max(last 3) after ep 10
    assert (jsb.schedule, jsb.lr_factor, jsb.lr_window, jsb.lr_after) == ("regress", 0.1, 3, 10)
    adding = get_task("adding600").resolve("tcn").train  # add_test.py's lr, then a cosine
    assert (adding.lr, adding.schedule) == (4e-3, "cosine")
    adding_lstm = get_task("adding600").resolve("lstm").train
    assert (adding_lstm.lr, adding_lstm.schedule, adding_lstm.clip) == (2e-3, "cosine", 1.0)


def test_every_data_and_model_setting_is_described():
    from torchtcn.tasks.base import DATA_HELP

    keys = {k for name in available_tasks() for k in get_task(name).data_preset}
    assert keys - set(DATA_HELP) == set(), "describe new data settings in tasks.base.DATA_HELP"
    assert set(DATA_HELP) - keys == set(), "DATA_HELP describes a setting no task has"
    for name in ("jsb", "word_ptb"):  # a sequence task and a language model
        for model in ("tcn", "lstm", "gru", "rnn"):
            helps = get_task(name).model_help(model)
            assert helps and all(helps.values()), (name, model, helps)


def test_overrides_are_typed_and_checked():
    task = get_task("jsb")
    spec = task.resolve("tcn", {"channels": "32*3", "lr": "3e-4", "clip": "none", "epochs": "2",
                                "norm": "layer"})
    assert spec.model_kwargs["channels"] == (32, 32, 32) and spec.train.lr == 3e-4
    assert spec.train.clip is None and spec.train.epochs == 2 and spec.model_kwargs["norm"] == "layer"
    with pytest.raises(ValueError, match=r"unknown setting 'lrr'.*valid keys: trainer:.*\blr\b.*data: data, loss_reduction; model:.*kernel_size"):
        task.resolve("tcn", {"lrr": "1"})
    with pytest.raises(ValueError, match=r"unknown setting 'kernel_size'.*hidden_size"):
        task.resolve("lstm", {"kernel_size": "3"})  # a TCN key is not an LSTM key
    with pytest.raises(ValueError, match="unknown model 'transformer'.*'gru', 'lstm', 'rnn', 'tcn'"):
        task.resolve("transformer")
    with pytest.raises(ValueError, match="epochs='two': expected int"):
        task.resolve("tcn", {"epochs": "two"})
    with pytest.raises(ValueError, match="optimizer must be one of"):
        task.resolve("tcn", {"optimizer": "lion"})


@pytest.mark.parametrize("key", ["n_train", "n_valid", "n_test"])
def test_synthetic_split_sizes_below_one_name_their_setting(key):
    task = get_task("adding200")
    with pytest.raises(ValueError, match=f"{key} must be an int >= 1, found 0"):
        task.load(task.resolve("tcn", {"T": "20", key: "0"}))


def test_synthetic_data_is_seeded_and_splits_differ():
    task = get_task("copy1000")
    spec = task.resolve("tcn", {"T": "20", "n_train": "8", "n_valid": "8", "n_test": "8"})
    a, b = task.load(spec), task.load(spec)
    assert torch.equal(a["train"].x, b["train"].x) and torch.equal(a["test"].y, b["test"].y)
    assert not torch.equal(a["train"].x, a["valid"].x)
    assert a["train"].x.shape == (8, 1, 40)


def test_copy_reports_recall_accuracy_on_the_digits():
    run = build_run("copy500", "tcn", {"T": "12", "n_train": "16", "n_valid": "8", "n_test": "8",
                                       "channels": "8,8", "kernel_size": "4"}, epochs=1)
    x, y = run.datasets["test"].batch(torch.arange(8))
    perfect = torch.nn.functional.one_hot(y, 10).permute(0, 2, 1).float() * 50
    _, totals = run.task.step(lambda _x: perfect, (x, y))
    assert totals["count_recall"] == 8 * 10 and totals["correct_recall"] == 80
    assert run.task.extra_metrics(totals)["recall_accuracy"] == 100.0


def test_permuted_mnist_uses_one_fixed_permutation(monkeypatch):
    import torchtcn.tasks.mnist as tm

    seen = []

    def fake(data_dir, split, *, permutation=None):
        seen.append(permutation)
        n = 20 if split == "train" else 6
        return torch.randn(n, 1, 784), torch.arange(n) % 10

    monkeypatch.setattr(tm, "sequential_mnist", fake)
    task = get_task("pmnist")
    ds = task.load(task.resolve("tcn", {"n_valid": "5"}))
    assert (len(ds["train"]), len(ds["valid"]), len(ds["test"])) == (15, 5, 6)
    assert torch.equal(seen[0], seen[1]) and torch.equal(seen[0], torchtcn.data.permutation(0))
    get_task("seq_mnist").load(get_task("seq_mnist").resolve("tcn", {"n_valid": "5"}))
    assert seen[-1] is None


# --------------------------------------------------------------------------- music


def _write_mat(path, rng, counts=(5, 3, 3)):
    import scipy.io

    def cells(n):
        arr = np.empty((1, n), dtype=object)
        for i in range(n):
            arr[0, i] = (rng.random((int(rng.integers(2, 9)), 88)) < 0.1).astype(np.uint8)
        return arr

    scipy.io.savemat(path, {"traindata": cells(counts[0]), "validdata": cells(counts[1]),
                            "testdata": cells(counts[2])})


def test_music_from_any_mat_file_and_padding_is_exact(tmp_path):
    path = tmp_path / "mine.mat"
    _write_mat(path, np.random.default_rng(0))
    with pytest.raises(ValueError, match="--data PATH"):
        build_run("music", "tcn")
    run = build_run("music", "tcn", {"data": str(path), "channels": "16,16", "kernel_size": "3"})
    assert len(run.datasets["train"]) == 5
    model = run.model.eval()
    ds = run.datasets["valid"]
    with torch.no_grad():
        _, together = run.task.step(model, ds.batch(torch.arange(3)))
        alone = [run.task.step(model, ds.batch(torch.tensor([i])))[1] for i in range(3)]
    assert together["count"] == sum(a["count"] for a in alone)
    assert together["loss"] == pytest.approx(sum(a["loss"] for a in alone), rel=1e-5)


def test_music_loss_reduction_sum_is_the_reference_scripts_per_piece_sum(tmp_path):
    path = tmp_path / "mine.mat"
    _write_mat(path, np.random.default_rng(0))
    settings = {"data": str(path), "channels": "16,16", "kernel_size": "3"}
    mean_run = build_run("music", "tcn", settings)
    sum_run = build_run("music", "tcn", {**settings, "loss_reduction": "sum"})
    idx = torch.arange(3)
    model = mean_run.model.eval()
    with torch.no_grad():
        mean_loss, mean_totals = mean_run.task.step(model, mean_run.datasets["train"].batch(idx))
        sum_loss, sum_totals = sum_run.task.step(model, sum_run.datasets["train"].batch(idx))
    assert sum_totals == mean_totals  # the metric does not depend on the training loss
    assert sum_loss.item() == pytest.approx(mean_loss.item() * mean_totals["count"], rel=1e-6)
    with pytest.raises(ValueError, match="loss_reduction must be one of mean, sum, got 'max'"):
        build_run("music", "tcn", {**settings, "loss_reduction": "max"})


def test_music_lstm_trains_one_epoch(tmp_path):
    path = tmp_path / "mine.mat"
    _write_mat(path, np.random.default_rng(1))
    run = build_run("music", "gru", {"data": str(path), "hidden_size": "8"}, epochs=1)
    r = Trainer(run.task, run.model, run.datasets, run.spec.train, quiet=True).fit()
    assert math.isfinite(r.test["nll_per_frame"]) and r.steps == 5


# --------------------------------------------------------------------------- language


def _corpus_dir(tmp_path, words=True):
    rng = np.random.default_rng(0)
    vocab = ["the", "cat", "sat", "on", "mat", "dog", "ran"]
    d = tmp_path / "corpus"
    d.mkdir()
    for split, n in (("train", 60), ("valid", 15), ("test", 15)):
        lines = [" ".join(rng.choice(vocab, size=6)) for _ in range(n)]
        (d / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return d


TINY_LM = {"channels": "12,12,8", "emsize": "8", "kernel_size": "2", "seq_len": "12", "valid_len": "6",
           "batch_size": "4", "eval_batch_size": "2"}


@pytest.mark.parametrize("task_name, metric", [("word_lm", "perplexity"), ("char_lm", "bpc")])
def test_user_text_language_models(tmp_path, task_name, metric):
    d = _corpus_dir(tmp_path)
    with pytest.raises(ValueError, match="--data PATH"):
        build_run(task_name, "tcn", {})
    run = build_run(task_name, "tcn", {"data": str(d), **TINY_LM}, epochs=1)
    train = run.datasets["train"]
    # every target of every stream is scored exactly once per pass
    scored = sum(train.batch(torch.arange(k * 4, k * 4 + 4))[2] for k in range(len(train) // 4))
    assert scored == train.streams.shape[1] - 1
    with pytest.raises(ValueError, match="streams of one window"):
        train.batch(torch.tensor([0, 4]))
    r = Trainer(run.task, run.model, run.datasets, run.spec.train, quiet=True).fit()
    assert math.isfinite(r.test[metric]) and r.test["loss"] > 0
    if metric == "bpc":
        assert r.test["bpc"] == pytest.approx(r.test["loss"] / math.log(2))
    else:
        assert r.test["perplexity"] == pytest.approx(math.exp(r.test["loss"]))


def test_a_language_model_keeps_its_vocabulary_and_refuses_edited_files(tmp_path, capsys):
    """The vocabulary is rebuilt from the files at every load, so an edited training file
    (here: a line that only changes which word comes first) would silently remap every id:
    eval and --resume refuse it, and model.safetensors carries the vocabulary itself."""
    import json

    from torchtcn.cli import main
    from torchtcn.io import read_metadata
    from torchtcn.tasks.language import VOCABULARY_METADATA_KEY

    d, run_dir = _corpus_dir(tmp_path), tmp_path / "run"
    args = ["train", "word_lm", "--data", str(d), *(f"{k}={v}" for k, v in TINY_LM.items()),
            "--out", str(run_dir), "--quiet", "--no-tensorboard"]
    assert main([*args, "--epochs", "1"]) == 0
    symbols = json.loads(read_metadata(run_dir / "model.safetensors")[VOCABULARY_METADATA_KEY])
    first_words = (d / "train.txt").read_text().split()
    assert symbols[0] == first_words[0] and len(symbols) == 8  # 7 words and <eos>
    assert main(["eval", str(run_dir)]) == 0
    capsys.readouterr()

    rest = [w for w in ("the", "cat", "sat", "on", "mat", "dog", "ran") if w != first_words[0]]
    train = d / "train.txt"
    train.write_text(" ".join(rest) + "\n" + train.read_text())  # same words, new first-seen order
    for command in (["eval", str(run_dir)], [*args, "--epochs", "2", "--resume"]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert "the data now differs from the data" in err and "vocabulary_sha256" in err


def test_a_split_too_short_for_its_streams_is_named(tmp_path):
    d = _corpus_dir(tmp_path)
    with pytest.raises(ValueError, match=r"the valid split: cannot cut \d+ tokens into 100000 "
                                         r"non-empty streams .*eval_batch_size=100000"):
        build_run("word_lm", "tcn", {"data": str(d), **TINY_LM, "eval_batch_size": "100000"})
    with pytest.raises(ValueError) as err:  # a window setting: no hint about the streams
        build_run("word_lm", "tcn", {"data": str(d), **TINY_LM, "seq_len": "0"})
    assert "seq_len" in str(err.value) and "batch_size" not in str(err.value)


def test_lstm_language_model_preset_ties_weights(tmp_path):
    d = _corpus_dir(tmp_path)
    run = build_run("word_lm", "lstm", {"data": str(d), "hidden_size": "8", "emsize": "8",
                                        "num_layers": "1", "dropout": "0", "seq_len": "12", "valid_len": "6"})
    assert run.model.decoder.weight is run.model.embedding.weight


def test_text8_and_wikitext103_loaders(tmp_path):
    letters = "abcdefghijklmnopqrstuvwxyz "
    rng = np.random.default_rng(0)
    text = "".join(rng.choice(list(letters), size=1000))
    with zipfile.ZipFile(tmp_path / "text8.zip", "w") as zf:
        zf.writestr("text8", text)
    run = build_run("text8", "tcn", {"data": str(tmp_path / "text8.zip"), "split_sizes": "800,100,100",
                                     **TINY_LM})
    assert run.datasets["train"].vocab_size <= 28 and run.spec.data["split_sizes"] == (800, 100, 100)
    wiki = tmp_path / "wikitext-103"
    wiki.mkdir()
    for split in ("train", "valid", "test"):
        (wiki / f"wiki.{split}.tokens").write_text(" = Title = \n the cat sat . \n the cat ran . \n" * 5)
    run = build_run("wikitext103", "tcn", {"data": str(wiki), **TINY_LM})
    assert run.datasets["train"].vocab_size == 8  # = Title the cat sat . ran <eos>


def _lambada_release(root):
    root.mkdir()
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "home"]
    (root / "lambada_vocabulary_sorted.txt").write_text("\n".join(words) + "\n")
    novels = root / "train-novels" / "fiction"
    novels.mkdir(parents=True)
    rng = np.random.default_rng(0)
    (novels / "book.txt").write_text("\n".join(" ".join(rng.choice(words, 8)) for _ in range(40)) + "\n")
    (root / "lambada_development_plain_text.txt").write_text("the cat sat on a mat\nthe dog ran home\n")
    (root / "lambada_test_plain_text.txt").write_text("a cat and a dog ran home\nthe mat\ncat sat on dog\n")


def test_lambada_scores_the_last_word_without_feeding_it(tmp_path):
    _lambada_release(tmp_path / "lambada")
    run = build_run("lambada", "tcn", {"data": str(tmp_path / "lambada"), **TINY_LM,
                                       "eval_batch_size": "8"}, epochs=1)
    test = run.datasets["test"]
    d = test.passages
    inputs, targets = test.batch(torch.arange(len(test)))
    vocab = run.model.embedding.num_embeddings
    for row, p in enumerate(d):
        n = p.context.numel()
        assert torch.equal(inputs[row, -n:], p.context) and targets[row] == p.target
    # the context never holds the target word as its final token: "the mat" -> context "the"
    assert [p.context.tolist() for p in d if p.context.numel() == 1] == [[0]]
    assert vocab == 11  # ten words + <eos>
    r = Trainer(run.task, run.model, run.datasets, run.spec.train, quiet=True).fit()
    assert math.isfinite(r.test["perplexity"]) and 0 <= r.test["accuracy"] <= 100
    assert r.test["perplexity"] == pytest.approx(math.exp(r.test["loss"]))


def test_lambada_settings_that_take_none_and_bad_values_before_training(tmp_path):
    _lambada_release(tmp_path / "lambada")
    data = {"data": str(tmp_path / "lambada"), **TINY_LM}
    run = build_run("lambada", "tcn", {**data, "passage_len": "none", "max_train_files": "None"})
    assert run.spec.data["passage_len"] is None and run.spec.data["max_train_files"] is None
    for key, value, match in (("passage_len", "0", "passage_len must be >= 1, got 0"),
                              ("max_train_files", "-1", "max_train_files must be a positive int")):
        with pytest.raises(ValueError, match=match):
            build_run("lambada", "tcn", {**data, key: value})


def test_missing_data_says_where_it_looked(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"(?s)Looked in:.*TORCHTCN_DATA"):
        build_run("jsb", "tcn", data_dir=tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"(?s)ptb.*Looked in:.*download=True"):
        build_run("word_ptb", "tcn", data_dir=tmp_path / "nowhere")
