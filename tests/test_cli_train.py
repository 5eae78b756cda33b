"""The ``torchtcn train / eval / report / demo`` commands, end to end on tiny settings."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from torchtcn.cli import main
from torchtcn.data.paths import candidate_data_dirs

TINY = ["T=16", "n_train=48", "n_valid=16", "n_test=16", "channels=6,6", "kernel_size=4", "batch_size=16"]


def _train(tmp_path, *extra, name="run"):
    return main(["train", "adding200", "--model", "tcn", "--out", str(tmp_path / name), "--quiet",
                 "--no-tensorboard", *TINY, *extra])


def test_train_writes_run_folder_and_result(tmp_path, capsys):
    # key=value words may come before, between and after the options
    rc = main(["train", "adding200", "epochs=2", "--model", "tcn", *TINY[:3], "--out", str(tmp_path / "r"),
               *TINY[3:], "--quiet", "--seed", "3", "--results-dir", str(tmp_path / "results"),
               "--no-tensorboard"])
    out = capsys.readouterr().out
    assert rc == 0 and "adding200 / tcn: test mse =" in out and "last 2 epochs" in out
    rec = json.loads((tmp_path / "results" / "adding200-tcn.json").read_text())
    for key in ("task", "model", "metric", "value", "paper_tcn", "higher_is_better", "epochs", "params",
                "seed", "wall_seconds", "hardware", "complete"):
        assert key in rec, key
    assert rec["epochs"] == 2 and rec["seed"] == 3 and rec["complete"] is True and rec["metric"] == "mse"
    assert rec["value_last3_mean"] == pytest.approx(sum(h["test_mse"] for h in rec["history"]) / 2)
    assert rec["settings"]["model_kwargs"]["channels"] == [6, 6]
    assert (tmp_path / "r" / "adding200-tcn.json").exists() and (tmp_path / "r" / "best.ckpt").exists()


def test_threads_flag_sets_torch_threads_and_the_record_says_so(tmp_path, capsys):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert _train(tmp_path, "epochs=1", "--threads", "1", "--results-dir", str(tmp_path / "res")) == 0
        rec = json.loads((tmp_path / "res" / "adding200-tcn.json").read_text())
        assert rec["hardware"].endswith(", 1 torch thread")
        assert torch.get_num_threads() == 2  # the caller's setting is back
    finally:
        torch.set_num_threads(before)
    for bad in ("0", "-2", "two"):
        with pytest.raises(SystemExit) as exc:
            _train(tmp_path, "--threads", bad, name="never")
        assert exc.value.code == 2
        assert f"expected a whole number >= 1, found '{bad}'" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_demo_refuses_epochs_below_one_before_training(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--epochs", "0", "--out", str(tmp_path / "demo")])
    assert exc.value.code == 2
    captured = capsys.readouterr()
    assert "expected a whole number >= 1, found '0'" in captured.err and "training" not in captured.out
    assert not (tmp_path / "demo").exists()


def test_resume_through_the_cli(tmp_path, capsys):
    assert _train(tmp_path, "epochs=1") == 0
    assert _train(tmp_path, "epochs=2", "--resume") == 0
    rec = json.loads((tmp_path / "run" / "adding200-tcn.json").read_text())
    assert rec["epochs"] == 2 and rec["steps"] == 6


def test_a_fresh_run_never_replaces_a_run_folder_unasked(tmp_path, capsys):
    assert _train(tmp_path, "epochs=1") == 0
    best = (tmp_path / "run" / "best.ckpt").read_bytes()
    capsys.readouterr()
    assert _train(tmp_path, "epochs=1", "seed=7") == 2
    err = capsys.readouterr().err
    assert "already holds a run (last.ckpt, best.ckpt): --resume continues it, --overwrite" in err
    assert (tmp_path / "run" / "best.ckpt").read_bytes() == best
    assert _train(tmp_path, "epochs=1", "seed=7", "--overwrite") == 0
    assert (tmp_path / "run" / "best.ckpt").read_bytes() != best


def test_overwrite_never_reuses_the_earlier_runs_weights(tmp_path, capsys):
    # the new run stops before it validates: it must not report (or save) the old best model
    assert _train(tmp_path, "epochs=2") == 0
    old = json.loads((tmp_path / "run" / "adding200-tcn.json").read_text())
    old_model = (tmp_path / "run" / "model.safetensors").read_bytes()
    assert _train(tmp_path, "epochs=2", "seed=5", "--max-steps", "1", "--overwrite") == 0
    new = json.loads((tmp_path / "run" / "adding200-tcn.json").read_text())
    assert new["value"] != old["value"] and new["complete"] is False
    assert not (tmp_path / "run" / "best.ckpt").exists()
    assert (tmp_path / "run" / "model.safetensors").read_bytes() != old_model


def test_overwrite_also_removes_the_earlier_result_and_plot(tmp_path, monkeypatch):
    """A new run that dies before it finishes must not leave the old run's "complete" result
    beside its own checkpoints (the run is cut short here right after it is built)."""
    assert _train(tmp_path, "epochs=1") == 0
    run = tmp_path / "run"
    assert (run / "adding200-tcn.json").exists() and (run / "curves.png").exists()
    from torchtcn.train import Trainer

    def die(self, resume=False):
        raise KeyboardInterrupt  # killed before anything new was written
    monkeypatch.setattr(Trainer, "fit", die)
    assert _train(tmp_path, "epochs=1", "seed=3", "--overwrite") == 130
    assert not any((run / n).exists() for n in ("adding200-tcn.json", "curves.png", "best.ckpt",
                                                "last.ckpt", "model.safetensors"))


def test_resume_without_last_ckpt_or_with_overwrite_is_refused(tmp_path, capsys):
    assert _train(tmp_path, "epochs=1") == 0
    run = tmp_path / "run"
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    capsys.readouterr()
    assert _train(tmp_path, "epochs=2", "--resume", "--overwrite") == 2
    assert "give one of them" in capsys.readouterr().err
    (run / "last.ckpt").unlink()
    del before["last.ckpt"]
    # "no checkpoint: starting from scratch" used to wipe the log, the result and the model
    assert _train(tmp_path, "epochs=2", "--resume") == 2
    assert "holds best.ckpt but no last.ckpt" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    assert _train(tmp_path, "epochs=1", "--resume", name="fresh") == 0  # an empty folder: a new run


@pytest.mark.parametrize("damage", ["missing", "corrupted"])
def test_resume_checks_the_best_checkpoint_before_training(tmp_path, capsys, damage):
    """A lost best.ckpt made the reported test value the last weights' (best_epoch still
    named the earlier epoch); a corrupted one failed only after every remaining epoch."""
    assert _train(tmp_path, "epochs=3", "--max-steps", "7") == 0  # validated twice, then cut
    run = tmp_path / "run"
    best = run / "best.ckpt"
    if damage == "missing":
        best.unlink()
    else:
        data = bytearray(best.read_bytes())
        data[-3] ^= 0xFF
        best.write_bytes(bytes(data))
    last = (run / "last.ckpt").read_bytes()
    capsys.readouterr()
    assert _train(tmp_path, "epochs=3", "--resume") == 2
    err = capsys.readouterr().err
    assert "best.ckpt" in err and "--overwrite" in err
    assert (run / "last.ckpt").read_bytes() == last  # nothing trained, nothing overwritten


def test_resumed_run_counts_the_time_of_every_session(tmp_path, monkeypatch):
    """wall_seconds and a resumed epoch's seconds include the time before a checkpoint_every
    save (a run killed after one restarted from the last epoch-end or limit save's clock)."""
    from torchtcn.checkpoint import load_checkpoint
    from torchtcn.train import Trainer

    clocks, save = [], Trainer.save_checkpoint

    def recording(self, name):
        save(self, name)
        clocks.append((self.state["step"], self.state["wall_seconds"], self.state["epoch_seconds"]))
    monkeypatch.setattr(Trainer, "save_checkpoint", recording)

    def train(*extra):
        tiny = [a for a in TINY if not a.startswith("batch_size=")]  # 12 steps an epoch
        return main(["train", "adding200", "--out", str(tmp_path / "run"), "--quiet",
                     "--no-tensorboard", *tiny, "batch_size=4", "epochs=1", "checkpoint_every=2", *extra])

    assert train("--max-steps", "5") == 0
    state = load_checkpoint(tmp_path / "run" / "last.ckpt").trainer_state
    assert state["step_in_epoch"] == 5 and state["wall_seconds"] > 0 and state["epoch_seconds"] > 0
    steps, walls, epochs = zip(*clocks)  # the checkpoint_every saves at steps 2 and 4, then the stop
    assert steps == (2, 4, 5) and 0 < walls[0] < walls[1] <= walls[2] and 0 < epochs[0] < epochs[1]
    before = state["epoch_seconds"]
    assert train("--resume") == 0
    rec = json.loads((tmp_path / "run" / "adding200-tcn.json").read_text())
    # (the result rounds wall_seconds to 0.1 s)
    assert rec["history"][0]["seconds"] > before and rec["wall_seconds"] + 0.05 >= rec["history"][0]["seconds"]


def test_max_steps_marks_the_result_incomplete(tmp_path, capsys):
    assert _train(tmp_path, "epochs=5", "--max-steps", "4") == 0
    rec = json.loads((tmp_path / "run" / "adding200-tcn.json").read_text())
    assert rec["complete"] is False and rec["steps"] == 4 and "max_steps" in rec["stop_reason"]
    assert "INCOMPLETE" in capsys.readouterr().out


@pytest.mark.parametrize("argv, match", [
    (["train", "nosuchtask"], "unknown task 'nosuchtask'; available: adding200"),
    (["train", "jsb", "--model", "transformer"], "unknown model 'transformer'.*'lstm'"),
    (["train", "jsb", "lr=0.1", "wibble=3"], "unknown setting 'wibble'.*valid keys: trainer:.*epochs"),
    (["train", "jsb", "notakeyvalue="], "unknown setting 'notakeyvalue'"),
    (["train", "jsb", "epochs=x"], "epochs='x': expected int"),
])
def test_bad_arguments_list_the_valid_ones(argv, match, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default run folder is runs/<task>-<model> under the cwd
    assert main(argv) == 2
    err = capsys.readouterr().err
    import re

    assert re.search(match, err), err


def test_missing_data_message(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "jsb", "--data-dir", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "Looked in" in err and str(tmp_path / "empty") in err and "TORCHTCN_DATA" in err


def _assert_eval_runs_on_threads(run_dir, monkeypatch):
    """``eval --threads 1`` evaluates on one torch thread and gives the caller's count back."""
    import torch

    from torchtcn.commands import eval as eval_command

    seen, evaluate = [], eval_command.evaluate_checkpoint
    monkeypatch.setattr(eval_command, "evaluate_checkpoint",
                        lambda *a: seen.append(torch.get_num_threads()) or evaluate(*a))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert main(["eval", str(run_dir), "--threads", "1"]) == 0
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_eval_checkpoint_and_corrupted_checkpoint(tmp_path, capsys, monkeypatch):
    assert _train(tmp_path, "epochs=1") == 0
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "run" / "best.ckpt"), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    rec = json.loads((tmp_path / "run" / "adding200-tcn.json").read_text())
    assert "adding200 / tcn on test" in out and "mse=" in out
    from torchtcn.report import format_value

    assert f"mse={format_value(rec['value'], 'mse')}" in out  # the number the run recorded
    assert main(["eval", str(tmp_path / "run")]) == 0  # a run folder means its best.ckpt
    _assert_eval_runs_on_threads(tmp_path / "run", monkeypatch)
    ckpt = tmp_path / "run" / "last.ckpt"
    broken = ckpt.read_bytes()[:1000]
    ckpt.write_bytes(broken)
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()}
    assert main(["eval", str(ckpt)]) == 2
    assert "last.ckpt" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()} == before
    # resuming from the corrupted checkpoint fails the same way and overwrites nothing
    assert _train(tmp_path, "epochs=2", "--resume") == 2
    assert ckpt.read_bytes() == broken


@pytest.mark.parametrize("change, match", [
    ({"trainer": [1]}, "does not record its task"),
    ({"trainer": {"run": "x"}}, "does not record its task"),
    ({"run.train": "x"}, "run.train must be an object, found str"),
    ({"run.data": [1]}, "run.data must be an object, found list"),
    ({"run.task": ["adding200"]}, "run.task must be a name, found list"),
])
def test_eval_of_a_checkpoint_with_a_malformed_run_record(tmp_path, capsys, change, match):
    from safetensors.torch import load_file, save_file

    from torchtcn.checkpoint import CHECKPOINT_KEY, read_checkpoint_state

    assert _train(tmp_path, "epochs=1") == 0
    good = tmp_path / "run" / "best.ckpt"
    doc = read_checkpoint_state(good)
    for key, value in change.items():
        if key.startswith("run."):
            doc["trainer"]["run"][key[4:]] = value
        else:
            doc[key] = value
    bad = tmp_path / "bad.ckpt"
    save_file(load_file(str(good)), str(bad), metadata={CHECKPOINT_KEY: json.dumps(doc)})
    capsys.readouterr()
    assert main(["eval", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.ckpt" in err and match in err and "Traceback" not in err


def test_export_and_summary_take_a_run_folder_or_a_checkpoint(tmp_path, capsys):
    assert _train(tmp_path, "epochs=1") == 0
    run = tmp_path / "run"
    for source, out in ((run, "a"), (run / "best.ckpt", "b")):
        assert main(["export", str(source), str(tmp_path / out),
                     "--what", "model_torchscript"]) == 0
        assert (tmp_path / out / "model.pt").is_file()
        assert main(["summary", str(source)]) == 0
        assert "receptive field" in capsys.readouterr().out.lower()
    (run / "model.safetensors").unlink()  # a run stopped early: its best.ckpt is used
    assert main(["summary", str(run)]) == 0
    (tmp_path / "empty").mkdir()
    assert main(["export", str(tmp_path / "empty"), str(tmp_path / "c")]) == 2
    assert "without model.safetensors, best.ckpt or last.ckpt" in capsys.readouterr().err


def test_eval_and_resume_give_a_data_setting_added_since_the_checkpoint_its_preset_value(tmp_path, monkeypatch, capsys):
    from torchtcn.tasks import get_task

    assert _train(tmp_path, "epochs=1") == 0
    task = get_task("adding200")
    monkeypatch.setitem(task.data_preset, "added_later", "preset value")
    seen = []
    load = type(task).load

    def recording_load(self, spec, data_dir=None):
        seen.append(spec.data["added_later"])
        return load(self, spec, data_dir)

    monkeypatch.setattr(type(task), "load", recording_load)
    assert main(["eval", str(tmp_path / "run")]) == 0
    assert seen == ["preset value"]
    assert _train(tmp_path, "epochs=2", "--resume") == 0  # not "written by a different run"
    assert seen[-1] == "preset value"


def test_report_command(tmp_path, capsys):
    assert _train(tmp_path, "epochs=1", "--results-dir", str(tmp_path / "results")) == 0
    md = tmp_path / "docs" / "benchmarks.md"
    assert main(["report", "--results-dir", str(tmp_path / "results"), "--out", str(md),
                 "--plots-dir", str(tmp_path / "docs" / "benchmarks")]) == 0
    text = md.read_text()
    assert "| adding200 | mse ↓ | tcn |" in text and "comparison.png" in text
    assert (tmp_path / "docs" / "benchmarks" / "comparison.png").exists()


def test_report_refuses_a_missing_results_folder_and_writes_nothing(tmp_path, capsys):
    md = tmp_path / "benchmarks.md"
    assert main(["report", "--results-dir", str(tmp_path / "typo"), "--out", str(md)]) != 0
    assert "no results folder at" in capsys.readouterr().err
    assert not md.exists()


def _has_jsb() -> bool:
    if os.environ.get("TORCHTCN_DATA"):
        return (Path(os.environ["TORCHTCN_DATA"]) / "music" / "JSB_Chorales.mat").exists()
    return any((d / "music" / "JSB_Chorales.mat").exists() for d in candidate_data_dirs())


@pytest.mark.skipif(not _has_jsb(), reason="JSB Chorales not found (set TORCHTCN_DATA)")
def test_demo_runs_tcn_and_lstm_through_the_trainer(tmp_path, capsys):
    assert main(["demo", "--epochs", "1", "--out", str(tmp_path / "demo"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "tcn" in out and "lstm" in out and "paper" in out
    assert (tmp_path / "demo" / "demo.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "demo" / "tcn" / "best.ckpt").exists()
    # one torch thread unless asked (see the demo's docstring), recorded with each run
    hardware = json.loads((tmp_path / "demo" / "lstm" / "jsb-lstm.json").read_text())["hardware"]
    assert hardware.endswith(", 1 torch thread")


def test_an_interrupted_demo_stops_and_says_so(tmp_path, capsys, monkeypatch):
    """Ctrl-C during the TCN run: the LSTM is not trained, the table marks the TCN row, and the
    exit status is 130 (the demo went on with the LSTM and exited 0)."""
    from torchtcn.commands import demo

    trained, real = [], demo.train_one

    def interrupted(task, model, overrides, **kw):
        trained.append(model)
        record, out = real(task, model, overrides, **{**kw, "max_steps": 3})
        return {**record, "complete": False, "stop_reason": "stopped by SIGINT"}, out
    monkeypatch.setattr(demo, "train_one", interrupted)
    assert main(["demo", "--epochs", "1", "--out", str(tmp_path / "demo"), "--quiet"]) == 130
    assert trained == ["tcn"]
    assert "INCOMPLETE (stopped by SIGINT)" in capsys.readouterr().out


def test_optional_dependencies_missing_give_a_message_not_a_traceback(tmp_path, capsys, monkeypatch):
    import torchtcn.report as report
    from torchtcn import export

    def no_matplotlib():
        raise ImportError("plots need matplotlib: pip install 'torchtcn[plot]' (or pip install matplotlib)")
    monkeypatch.setattr(report, "pyplot", no_matplotlib)
    assert main(["demo", "--epochs", "1", "--out", str(tmp_path / "demo")]) == 2  # before training
    assert "pip install 'torchtcn[plot]'" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()

    import torchtcn

    torchtcn.save(torchtcn.TCN(1, [4]), tmp_path / "m.safetensors")
    monkeypatch.setitem(__import__("sys").modules, "onnx", None)  # import onnx fails
    assert main(["export", str(tmp_path / "m.safetensors"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "pip install 'torchtcn[export]'" in err and "--what model_torchscript" in err
    assert not (tmp_path / "out").exists()  # nothing half-written
    with pytest.raises(ImportError, match="torchtcn\\[export\\]"):
        export.export_onnx(torchtcn.TCN(1, [4]), tmp_path / "direct.onnx")


def test_show_settings_prints_the_resolved_run_and_trains_nothing(tmp_path, capsys):
    from torchtcn.commands.train import parse_overrides
    from torchtcn.tasks import get_task

    rc = main(["train", "copy1000", "--show-settings", "lr=1e-3", "channels=8,8", "--epochs", "3",
               "--out", str(tmp_path / "never")])
    out = capsys.readouterr().out
    assert rc == 0 and not (tmp_path / "never").exists()
    lines = out.splitlines()
    assert lines[0] == "# copy1000 / tcn" and "lr=0.001" in out and "epochs=3 " in out
    assert "optimizer=rmsprop" in out and "channels=8,8" in out and "dropout=0.0" in out
    assert any(line.startswith("copy_len=10 ") and line.endswith("# digits to memorise and recall")
               for line in lines)  # data settings are described too
    assert any(line.startswith("kernel_size=8 ") and line.endswith("# convolution kernel size k")
               for line in lines)  # and model settings
    assert any(line.startswith("#   norm=weight ") for line in lines)  # defaults the preset leaves
    # every printed line is a valid override, and feeding them all back gives the same run
    words = [line.split("  #")[0].strip() for line in lines if line and not line.startswith("#")]
    again = get_task("copy1000").resolve("tcn", parse_overrides(words))
    assert again == get_task("copy1000").resolve("tcn", {"lr": "1e-3", "channels": "8,8", "epochs": "3"})
    # a bad model setting is refused here already, not only once the data is loaded
    for bad, message in (("kernel_size=0", "kernel_size must be >= 1, got 0"),
                         ("hidden_size=0", "hidden_size")):
        model = "lstm" if bad.startswith("hidden") else "tcn"
        assert main(["train", "copy1000", "--model", model, "--show-settings", bad]) == 2
        assert message in capsys.readouterr().err


def test_download_command_resolves_tasks_and_checks_every_name_first(tmp_path, monkeypatch, capsys):
    import torchtcn.commands.download as command

    fetched = []
    monkeypatch.setattr(command, "download", lambda name, root, overwrite: fetched.append(name))
    assert main(["download", "jsb", "seq_mnist", "pmnist", "ptb", "--data-dir", str(tmp_path)]) == 0
    assert fetched == ["JSB_Chorales", "mnist", "ptb"]  # pmnist reads mnist: fetched once
    assert f"JSB_Chorales: ready in {tmp_path}" in capsys.readouterr().out
    fetched.clear()
    assert main(["download", "jsb", "nosuchset"]) == 2
    assert "unknown data set or task 'nosuchset'; data sets: JSB_Chorales" in capsys.readouterr().err
    assert main(["download", "adding200"]) == 2
    assert "reads no downloadable data set" in capsys.readouterr().err
    assert fetched == []


def test_train_download_fetches_the_missing_data_set(tmp_path, monkeypatch, capsys):
    import importlib

    dl = importlib.import_module("torchtcn.data.download")  # the attribute is the function
    calls = []

    def offline(name, root, overwrite=False):
        calls.append((name, Path(root)))
        raise OSError(f"could not download {name}: no network in this test")

    monkeypatch.setattr(dl, "download", offline)
    argv = ["train", "jsb", "--data-dir", str(tmp_path / "empty"), "--out", str(tmp_path / "r"),
            "--quiet", "--no-tensorboard"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "torchtcn download NAME (or torchtcn train ... --download)" in err and calls == []
    assert main([*argv, "--download"]) == 2
    assert calls == [("JSB_Chorales", tmp_path / "empty")]
    assert "could not download JSB_Chorales" in capsys.readouterr().err


def test_data_paths_are_recorded_absolute_and_found_under_the_data_dir(tmp_path, monkeypatch):
    from torchtcn.commands.train import data_path

    (tmp_path / "sets").mkdir()
    (tmp_path / "sets" / "mine.mat").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    assert data_path("sets/mine.mat") == str(tmp_path / "sets" / "mine.mat")
    assert data_path("mine.mat", tmp_path / "sets") == str(tmp_path / "sets" / "mine.mat")
    assert data_path("Nottingham", tmp_path / "sets") == "Nottingham"  # a named set stays a name
    assert data_path("missing.mat") == "missing.mat"  # the loader reports it
    for empty in ("", " "):  # not the working directory (Path("") exists: it is ".")
        with pytest.raises(ValueError, match="data is empty"):
            data_path(empty)


@pytest.mark.parametrize("reason, code", [
    (None, 0), ("stopped by SIGINT", 130), ("stopped by SIGTERM", 143),
    ("non-finite training loss nan at step 3", 1), ("time limit of 5 s reached", 0),
])
def test_exit_code_says_how_the_run_ended(tmp_path, monkeypatch, capsys, reason, code):
    import torchtcn.commands.train as command

    real = command.train_one

    def stopped(*args, **kwargs):
        record, out = real(*args, **kwargs)
        return {**record, "stop_reason": reason}, out

    monkeypatch.setattr(command, "train_one", stopped)
    assert _train(tmp_path, "epochs=1") == code


@pytest.mark.parametrize("where", ["afile", "afile/below"])
def test_an_unwritable_results_dir_is_refused_before_training(tmp_path, capsys, where):
    (tmp_path / "afile").write_text("")
    assert _train(tmp_path, "epochs=1", "--results-dir", str(tmp_path / where)) == 2
    err = capsys.readouterr().err
    assert f"--results-dir: cannot write the result to {tmp_path / where}" in err
    assert not (tmp_path / "run").exists()


def test_overwrite_with_another_model_removes_the_earlier_models_result(tmp_path):
    assert _train(tmp_path, "epochs=1") == 0
    assert main(["train", "adding200", "--model", "gru", "--out", str(tmp_path / "run"), "--quiet",
                 "--no-tensorboard", *TINY[:4], "hidden_size=4", "epochs=1", "--overwrite"]) == 0
    assert sorted(p.name for p in (tmp_path / "run").glob("*.json")) == ["adding200-gru.json"]


def test_eval_of_a_run_folder_that_never_validated_scores_last_ckpt(tmp_path, capsys):
    assert _train(tmp_path, "epochs=2", "--max-steps", "1") == 0
    assert not (tmp_path / "run" / "best.ckpt").exists()
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "run"), "--device", "cpu"]) == 0
    assert "mse" in capsys.readouterr().out


def test_a_setting_given_as_flag_and_as_key_value_is_refused(tmp_path, capsys):
    assert _train(tmp_path, "epochs=5", "--epochs", "2") == 2
    assert "epochs given twice: as epochs=5 and as --epochs 2" in capsys.readouterr().err
    assert main(["train", "series", "data=a.csv", "--data", "b.csv", "--show-settings"]) == 2
    assert "data given twice: as data=a.csv and as --data b.csv" in capsys.readouterr().err


@pytest.mark.parametrize("setting, message", [
    ("seed=20000000000000", r"seed must be an int in [0, 2**32), got 20000000000000"),
    ("seed=-1", r"seed must be an int in [0, 2**32), got -1"),
    ("momentum=-1", "momentum must be a number >= 0, got -1.0"),
    ("weight_decay=-0.1", "weight_decay must be a number >= 0, got -0.1"),
])
def test_trainer_settings_out_of_range_are_refused_before_anything_runs(tmp_path, capsys,
                                                                       setting, message):
    assert _train(tmp_path, setting, "--show-settings") == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("signal_name, code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_an_interrupt_exits_as_its_signal_without_a_traceback(tmp_path, monkeypatch, capsys,
                                                             signal_name, code):
    from torchtcn.interrupt import SecondSignal
    from torchtcn.train import Trainer

    def second_signal(self, resume=False):
        raise SecondSignal(signal_name)
    monkeypatch.setattr(Trainer, "fit", second_signal)
    assert _train(tmp_path, "epochs=1") == code
    err = capsys.readouterr().err
    assert f"interrupted ({signal_name})" in err and "Traceback" not in err


def test_summary_of_a_checkpoint(tmp_path, capsys):
    assert _train(tmp_path, "epochs=1") == 0
    capsys.readouterr()
    assert main(["summary", str(tmp_path / "run" / "best.ckpt")]) == 0
    assert "receptive field" in capsys.readouterr().out.lower()
    # architecture flags beside a saved model would be ignored: refused instead
    assert main(["summary", str(tmp_path / "run" / "best.ckpt"), "--channels", "5*2",
                 "--kernel-size=9"]) == 2
    assert "--channels, --kernel-size describe a TCN to build" in capsys.readouterr().err
    # an abbreviated flag is not a way around that check
    with pytest.raises(SystemExit):
        main(["summary", str(tmp_path / "run" / "best.ckpt"), "--kernel", "9"])
    assert "unrecognized arguments: --kernel" in capsys.readouterr().err


def test_sizes_the_machine_cannot_hold_are_an_error_not_a_traceback(tmp_path, capsys, monkeypatch):
    import torchtcn.commands.train as command

    def huge(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:118] DefaultCPUAllocator: can't "
                           "allocate memory: you tried to allocate 320000000000 bytes")

    monkeypatch.setattr(command, "train_one", huge)
    assert _train(tmp_path, "epochs=1") == 2
    assert "error: out of memory" in capsys.readouterr().err
    monkeypatch.setattr(command, "train_one", lambda *a, **k: (_ for _ in ()).throw(
        RuntimeError("a bug")))
    with pytest.raises(RuntimeError, match="a bug"):  # any other RuntimeError keeps its traceback
        _train(tmp_path, "epochs=1")


def test_a_setting_where_the_task_goes_says_the_task_comes_first(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "lr=0.1", "adding200"])
    assert exc.value.code == 2
    assert "the task name comes first, then key=value settings" in capsys.readouterr().err
