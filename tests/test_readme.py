"""The README's first example runs as written, and the figures in its comments are true."""

from __future__ import annotations

import re
from pathlib import Path

import torchtcn

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_quickstart_runs_and_its_comments_hold(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    monkeypatch.chdir(tmp_path)  # it writes clf.safetensors
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert tuple(namespace["y"].shape) == (16, 25, 784)
    assert namespace["model"].receptive_field == 3061
    assert torchtcn.count_parameters(namespace["clf"]) == 66_910
    out = capsys.readouterr().out
    assert out.startswith("3061\n") and "total parameters: 66,910" in out


def test_every_python_example_in_the_readme_and_docs_runs(tmp_path, monkeypatch):
    # each file's blocks run in order in one namespace, as a reader would paste them
    monkeypatch.chdir(tmp_path)
    files = [README, *sorted((README.parent / "docs").glob("*.md"))]
    ran = 0
    for path in files:
        namespace: dict = {}
        for i, block in enumerate(re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)):
            exec(compile(block, f"{path.name} python block {i + 1}", "exec"), namespace)
            ran += 1
    assert ran >= 3
