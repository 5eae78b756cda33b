import subprocess
import sys

import torchtcn
from torchtcn.cli import main


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


def test_console_script_entry_point():
    out = subprocess.run(
        [sys.executable, "-m", "torchtcn.cli", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "summary" in out.stdout
