"""Results files, the markdown table beside the paper, and the plots."""

from __future__ import annotations

import json

import pytest

from torchtcn import report as R
from torchtcn.tasks import get_task
from torchtcn.train import FitResult


def _record(task="jsb", model="tcn", value=8.3, complete=True, epochs=3, planned=3):
    t = get_task(task)
    spec = t.resolve(model, {"epochs": str(planned)})
    metric = t.metric
    history = [{"epoch": e + 1, "step": 10 * (e + 1), "train_loss": 9.0 - e, f"train_{metric}": 9.0 - e,
                "valid_loss": 9.5 - e, f"valid_{metric}": 9.5 - e, f"test_{metric}": value + 0.1 * (epochs - e - 1)}
               for e in range(epochs)]
    fit = FitResult(epochs=epochs, steps=10 * epochs, complete=complete,
                    stop_reason=None if complete else "time_limit=60s reached", best_valid=7.5,
                    best_epoch=epochs, test={"loss": value, metric: value}, history=history,
                    test_history=[h[f"test_{metric}"] for h in history], wall_seconds=123.4)
    return R.make_result(t, spec, fit, params=269_938, hardware="test CPU")


def test_make_result_has_the_required_fields_and_paper_numbers():
    rec = _record("jsb", "lstm", value=8.4)
    assert set(R.REQUIRED_KEYS) <= set(rec)
    assert (rec["paper_tcn"], rec["paper_model"], rec["higher_is_better"]) == (8.10, 8.45, False)
    assert rec["value"] == 8.4 and rec["epochs_planned"] == 3 and rec["complete"] is True
    json.dumps(rec)  # serialisable as is


def test_adding_records_the_mean_of_the_last_three_epochs():
    rec = _record("adding600", "tcn", value=1e-4, epochs=5, planned=5)
    tests = [h["test_mse"] for h in rec["history"]]
    assert rec["value_last3_mean"] == pytest.approx(sum(tests[-3:]) / 3) and rec["last_k_epochs"] == 3
    assert rec["paper_tcn"] == 5.8e-5


def test_adding_verdict_uses_the_papers_last_three_mean():
    # best-valid test 5e-5 beats 5.8e-5, but the paper's statistic (last-3 mean) does not
    rec = _record("adding600", "tcn", value=5e-5, epochs=5, planned=5)
    assert rec["value_last3_mean"] > 5.8e-5
    row = R.markdown_table([rec]).splitlines()[-1]
    assert "| no |" in row and "last-3 mean" in row
    good = _record("adding600", "tcn", value=1e-5, epochs=5, planned=5)
    good["value_last3_mean"] = 5e-5
    assert "| yes |" in R.markdown_table([good]).splitlines()[-1]


def test_write_and_load_results(tmp_path):
    for m, v in (("lstm", 8.5), ("tcn", 8.2), ("gru", 8.4)):
        R.write_result(_record("jsb", m, v), tmp_path)
    R.write_result(_record("adding200", "tcn", 2e-4), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adding200-tcn.json", "jsb-gru.json", "jsb-lstm.json",
                                                          "jsb-tcn.json"]
    loaded = R.load_results(tmp_path)
    assert [(r["task"], r["model"]) for r in loaded] == [("adding200", "tcn"), ("jsb", "tcn"), ("jsb", "lstm"),
                                                         ("jsb", "gru")]
    with pytest.raises(ValueError, match="missing"):
        R.write_result({"task": "x", "model": "y"}, tmp_path)
    diverged = {**_record("copy500", "rnn", float("inf")), "history": [{"loss": float("nan")}]}
    text = R.write_result(diverged, tmp_path / "strict").read_text()
    assert "Infinity" not in text and "NaN" not in text  # standard JSON: null instead
    assert json.loads(text)["value"] is None and json.loads(text)["history"] == [{"loss": None}]
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        R.load_results(tmp_path)
    (tmp_path / "bad.json").write_text('{"task": "x"}')
    with pytest.raises(ValueError, match="bad.json: result file lacks"):
        R.load_results(tmp_path)


def test_markdown_table_puts_the_paper_beside_ours():
    rows = [_record("jsb", "tcn", 8.2), _record("jsb", "lstm", 8.3, complete=False, epochs=2, planned=100),
            _record("adding600", "tcn", 4e-5)]
    table = R.markdown_table(rows)
    lines = table.splitlines()
    assert lines[0].startswith("| Task | Metric | Model |")
    jsb_tcn = next(line for line in lines if line.startswith("| jsb | nll_per_frame ↓ | tcn"))
    assert "| 8.200 | 8.100 | 8.100 | no | 3/3 | yes |" in jsb_tcn
    jsb_lstm = next(line for line in lines if "| lstm |" in line)
    assert "| 8.300 | 8.450 | 8.100 | yes | 2/100 | no |" in jsb_lstm  # 8.3 beats the paper's LSTM 8.45
    adding = next(line for line in lines if line.startswith("| adding600"))
    assert "4.00e-05" in adding and "5.80e-05" in adding and "last-3 mean" in adding


@pytest.mark.parametrize("value, metric, text", [
    (99.0123, "accuracy", "99.01"), (5.8e-5, "mse", "5.80e-05"), (8.1, "nll_per_frame", "8.100"), (0.164, "mse", "0.164"),
    (88.68, "perplexity", "88.68"), (1279.0, "perplexity", "1,279"), (None, "bpc", "–"),
])
def test_format_value(value, metric, text):
    assert R.format_value(value, metric) == text


def test_plots_are_png(tmp_path):
    rows = [_record("jsb", "tcn", 8.2), _record("jsb", "lstm", 8.4), _record("copy1000", "tcn", 1e-3)]
    assert R.plot_comparison(rows, tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    path = R.plot_learning_curves(rows[0]["history"], "nll_per_frame", tmp_path / "l.png", title="jsb")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_write_report(tmp_path):
    results = tmp_path / "results"
    R.write_result(_record("jsb", "tcn", 8.2), results)
    R.write_result(_record("jsb", "rnn", 8.9, complete=False, epochs=2, planned=100), results)
    md = tmp_path / "docs" / "benchmarks.md"
    text = R.write_report(results, md, tmp_path / "docs" / "benchmarks", intro="# Title\n")
    assert md.read_text() == text and text.startswith("# Title")
    assert "![comparison](benchmarks/comparison.png)" in text
    assert "jsb / rnn: 2 of 100 epochs (time_limit=60s reached)" in text
    assert "early stopping" not in text  # no run ended that way
    early = _record("jsb", "gru", 8.5, epochs=4, planned=100)
    early["stop_reason"] = "early stop: lr 2e-11 annealed below min_lr=1e-06"
    R.write_result(early, results)
    text = R.write_report(results, md, tmp_path / "docs" / "benchmarks")
    stopped, ended = text.split("opt-in early stopping")
    assert "jsb / gru" not in stopped and "jsb / rnn" not in ended
    assert "jsb / gru: 4 of 100 epochs (early stop: lr 2e-11 annealed below min_lr=1e-06)" in ended
    assert "none: every row was made with its task's current preset" in text  # epochs do not count
    assert (tmp_path / "docs" / "benchmarks" / "curves-jsb-rnn.png").exists()
    (tmp_path / "empty").mkdir()
    assert "_No results yet" in R.write_report(tmp_path / "empty", None, tmp_path / "p")


def test_a_missing_results_folder_is_an_error_not_an_empty_table(tmp_path):
    with pytest.raises(FileNotFoundError, match="no results folder at"):
        R.load_results(tmp_path / "none")
    (tmp_path / "file.json").write_text("{}")
    with pytest.raises(NotADirectoryError, match="must be a folder"):
        R.load_results(tmp_path / "file.json")


def test_report_names_rows_made_with_other_than_the_current_preset(tmp_path):
    results = tmp_path / "results"
    R.write_result(_record("jsb", "tcn", 8.2), results)
    old = _record("jsb", "lstm", 8.3)
    old["settings"]["train"]["lr"] = 1e-3
    old["settings"]["model_kwargs"]["hidden_size"] = 100
    R.write_result(old, results)
    assert R.preset_differences(old) == ["model_kwargs.hidden_size: 100 -> 224", "train.lr: 0.001 -> 0.002"]
    # settings set for the run or at a resume are named too; where it ran is not
    limited = _record("jsb", "gru", 8.4)
    limited["settings"]["train"].update(time_limit=900.0, min_lr=1e-6, device="cuda", checkpoint_every=50)
    assert R.preset_differences(limited) == ["train.min_lr: 1e-06 -> None", "train.time_limit: 900.0 -> None"]
    text = R.write_report(results, None, tmp_path / "plots")
    assert "- jsb / lstm: model_kwargs.hidden_size: 100 -> 224; train.lr: 0.001 -> 0.002" in text
    assert "- jsb / tcn" not in text.split("differ from the current preset")[1]
    gone = dict(old, task="no_such_task")
    assert "unknown task 'no_such_task'" in R.preset_differences(gone)[0]


def test_adding_is_judged_and_plotted_on_the_last_3_mean():
    # _record's test MSE per epoch: value + 0.2, value + 0.1, value (best-valid = last epoch)
    rec = _record("adding600", "tcn", 4e-5)
    assert rec["value"] == 4e-5 and R.compared_value(rec) == pytest.approx(0.1 + 4e-5)
    assert R._verdict(rec) == "no"  # 4e-5 alone would meet 5.8e-5; the last-3 mean does not
    one_epoch = _record("adding600", "tcn", 4e-5, epochs=1, planned=1)  # last-1 "mean" = value
    assert R._verdict(one_epoch) == "yes"
    assert R.compared_value(_record("jsb", "tcn", 8.3)) == 8.3


@pytest.mark.parametrize("key, value, match", [
    ("higher_is_better", "false", "higher_is_better must be bool, found str 'false'"),
    ("complete", 0, "complete must be bool, found int 0"),
    ("value", "8.2", "value must be int or float or null, found str"),
    ("params", None, "params must be int, found NoneType"),
    ("epochs", True, "epochs must be int, found bool"),
    ("wall_seconds", None, "wall_seconds must be int or float, found NoneType"),
    ("task", None, "task must be str, found NoneType"),
    ("history", "abc", "history must be list or null"),
    ("history", [{"epoch": 1}, {"loss": 1.0}], r"history\[1\] must be an object with an int 'epoch'"),
])
def test_a_result_key_of_the_wrong_type_is_refused_naming_the_file(tmp_path, key, value, match):
    rec = json.loads(R.write_result(_record("jsb", "lstm", 8.3), tmp_path).read_text())
    rec[key] = value
    (tmp_path / "jsb-lstm.json").write_text(json.dumps(rec))
    with pytest.raises(ValueError, match="jsb-lstm.json: " + match):
        R.load_results(tmp_path)


@pytest.mark.parametrize("constant", ["Infinity", "-Infinity", "NaN"])
def test_a_non_finite_number_in_a_result_file_is_refused(tmp_path, constant):
    path = R.write_result(_record("jsb", "lstm", 8.3), tmp_path)
    path.write_text(path.read_text().replace('"value": 8.3', f'"value": {constant}'))
    with pytest.raises(ValueError, match=f"jsb-lstm.json: .*non-finite number {constant}"):
        R.load_results(tmp_path)


def test_a_result_file_must_be_named_after_its_run(tmp_path):
    path = R.write_result(_record("jsb", "tcn", 8.2), tmp_path)
    (tmp_path / "jsb-tcn.seed2.json").write_text(path.read_text())  # a second jsb/tcn row
    with pytest.raises(ValueError, match="jsb-tcn.seed2.json: holds the result of jsb / tcn, "
                                         "whose file is jsb-tcn.json"):
        R.load_results(tmp_path)
    (tmp_path / "jsb-tcn.seed2.json").unlink()
    (tmp_path / "._jsb-tcn.json").write_bytes(b"\x00\x05\x16\x07\xa3")  # macOS metadata: skipped
    assert [r["model"] for r in R.load_results(tmp_path)] == ["tcn"]
    (tmp_path / "odd.json").write_bytes(b"\xa3\xff")
    with pytest.raises(ValueError, match="odd.json: not a JSON result file"):
        R.load_results(tmp_path)


def test_plots_link_relative_to_the_report_and_tolerate_uneven_history(tmp_path):
    results = tmp_path / "results"
    rec = _record("jsb", "tcn", 8.2, epochs=4, planned=4)
    for entry in rec["history"][2:]:
        del entry["test_nll_per_frame"]  # a run whose later epochs skipped the test pass
    R.write_result(rec, results)
    text = R.write_report(results, tmp_path / "a" / "docs" / "b.md", tmp_path / "a" / "plots")
    assert "![comparison](../plots/comparison.png)" in text
    assert (tmp_path / "a" / "plots" / "curves-jsb-tcn.png").exists()
    assert "## Plots" not in R.write_report(results, None, None)  # no plots dir: no plots


def test_report_cli_print_only_writes_nothing_and_a_missing_notes_file_writes_nothing(
        tmp_path, monkeypatch, capsys):
    from torchtcn.cli import main

    results = tmp_path / "results"
    R.write_result(_record("jsb", "tcn", 8.2), results)
    monkeypatch.chdir(tmp_path)
    assert main(["report", "--results-dir", str(results), "--out", "-"]) == 0
    assert "| jsb |" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]
    assert main(["report", "--results-dir", str(results), "--out", "r/b.md", "--notes", "nope.md"]) == 2
    assert "nope.md" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]
    assert main(["report", "--results-dir", str(results), "--out", "r/b.md"]) == 0
    assert (tmp_path / "r" / "b" / "comparison.png").exists()  # plots beside the report
    assert "![comparison](b/comparison.png)" in (tmp_path / "r" / "b.md").read_text()


def test_an_overflowing_number_in_a_result_file_is_refused(tmp_path):
    path = R.write_result(_record("jsb", "lstm", 8.3), tmp_path)
    path.write_text(path.read_text().replace('"value": 8.3', '"value": 1e999'))
    with pytest.raises(ValueError, match="non-finite number 1e999"):
        R.load_results(tmp_path)
    path.write_text(path.read_text().replace('"value": 1e999', '"value": 1' + "0" * 400))
    with pytest.raises(ValueError, match=r"non-finite number 100000000000\.\.\. \(401 digits\)"):
        R.load_results(tmp_path)


def test_curves_with_a_split_the_first_epochs_lack_and_null_values(tmp_path):
    rec = _record("copy1000", "tcn", 1e-3, epochs=4, planned=4)
    for entry in rec["history"][:2]:
        del entry["test_cross_entropy"]  # test_every_epoch switched on at a resume
    rec["history"][1]["valid_cross_entropy"] = None  # a diverged epoch, written as null
    path = R.plot_learning_curves(rec["history"], "cross_entropy", tmp_path / "c.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_report_out_without_a_suffix_puts_the_plots_beside_it(tmp_path, monkeypatch, capsys):
    from torchtcn.cli import main

    results = tmp_path / "results"
    R.write_result(_record("jsb", "tcn", 8.2), results)
    monkeypatch.chdir(tmp_path)
    assert main(["report", "--results-dir", str(results), "--out", "report"]) == 0
    assert (tmp_path / "report").is_file() and (tmp_path / "report_plots" / "comparison.png").exists()
    assert main(["report", "--results-dir", str(results), "--out", "r.md", "--plots-dir", "r.md"]) == 2
    assert "is the report file itself" in capsys.readouterr().err
