import subprocess
import sys

import pytest

import torchtcn
from torchtcn.cli import main
from torchtcn.commands.config_args import parse_int_list


def test_summary_from_flags(capsys):
    assert main(["summary", "--in-channels", "1", "--channels", "25*8", "--kernel-size", "7"]) == 0
    out = capsys.readouterr().out
    assert "3061" in out and "66,650" in out
    assert out.count("25->25") == 7


def test_summary_of_saved_model(tmp_path, capsys):
    path = tmp_path / "m.safetensors"
    body = torchtcn.TCN(1, [25] * 8, kernel_size=7)
    torchtcn.save(torchtcn.SequenceModel(body, out_features=10), path)
    assert main(["summary", str(path)]) == 0
    out = capsys.readouterr().out
    assert "total parameters: 66,910" in out and "receptive field: 3,061 steps" in out
    assert "head (last_step): 260 params" in out


def test_summary_bad_argument_is_a_clear_error(capsys):
    assert main(["summary", "--in-channels", "1", "--channels", "4", "--kernel-size", "0"]) == 2
    assert "kernel_size must be >= 1, got 0" in capsys.readouterr().err


def test_int_lists_expand_repeats_and_refuse_what_they_cannot_read(capsys):
    assert parse_int_list("32*2, 64") == (32, 32, 64)
    assert parse_int_list("25") == (25,)
    with pytest.raises(ValueError, match="repeat count in '25\\*-2' must be >= 1, found -2"):
        parse_int_list("25*-2,30")  # once silently (30,)
    with pytest.raises(ValueError, match="expected ints like 25,25 or 25\\*8, found 'abc'"):
        parse_int_list("abc")
    with pytest.raises(SystemExit):
        main(["summary", "--in-channels", "1", "--channels", "8*x"])
    assert "argument --channels: expected ints like 25,25 or 25*8, found '8*x'" in capsys.readouterr().err


def test_console_script_entry_point():
    out = subprocess.run(
        [sys.executable, "-m", "torchtcn.cli", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "summary" in out.stdout
