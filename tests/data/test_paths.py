from pathlib import Path

import pytest

from torchtcn.data import paths
from torchtcn.data.paths import ENV_VAR, candidate_data_dirs, find_file, resolve_data_dir


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV_VAR, raising=False)
    # Hide the checkout's own ../shared/data so only what a test creates is found.
    monkeypatch.setattr(paths, "_repo_root", lambda: None)
    work = tmp_path / "proj" / "sub"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    return work


def test_explicit_argument_wins(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env"))
    assert resolve_data_dir(tmp_path / "explicit") == tmp_path / "explicit"
    assert resolve_data_dir(str(tmp_path)) == tmp_path


def test_env_var_second(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env"))
    assert resolve_data_dir() == tmp_path / "env"


def test_search_order(clean_env, tmp_path):
    work = clean_env
    # Nothing exists: the default is ./data (where downloads go).
    assert resolve_data_dir() == work / "data"
    # A shared/data next to an ancestor is found by walking up.
    shared_up = tmp_path / "shared" / "data"
    shared_up.mkdir(parents=True)
    assert resolve_data_dir() == shared_up
    # ../shared/data relative to the CWD beats the walk.
    sibling = work.parent / "shared" / "data"
    sibling.mkdir(parents=True)
    assert resolve_data_dir() == sibling
    # ./data beats everything.
    (work / "data").mkdir()
    assert resolve_data_dir() == work / "data"
    assert candidate_data_dirs()[0] == work / "data"


def test_find_file_searches_candidates_and_alternatives(clean_env, tmp_path):
    shared = tmp_path / "shared" / "data"
    (shared / "ptb").mkdir(parents=True)
    f = shared / "ptb" / "ptb.train.txt"
    f.write_text("x\n")
    assert find_file("ptb/ptb.train.txt") == f
    assert find_file(["ptb.train.txt", "ptb/ptb.train.txt"]) == f
    assert find_file("ptb.train.txt", shared / "ptb") == f


def test_find_file_error_lists_places_and_remedies(clean_env, tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        find_file(["mnist/a.gz", "mnist/a"], tmp_path / "nowhere")
    msg = str(e.value)
    assert str(tmp_path / "nowhere" / "mnist" / "a.gz") in msg
    assert str(tmp_path / "nowhere" / "mnist" / "a") in msg
    assert "--data-dir" in msg and ENV_VAR in msg and "download=True" in msg
    # Without a directory every candidate is listed.
    with pytest.raises(FileNotFoundError) as e:
        find_file("nope.txt")
    for cand in candidate_data_dirs():
        assert str(cand / "nope.txt") in str(e.value)


def test_bad_types():
    with pytest.raises(TypeError, match="data_dir"):
        resolve_data_dir(3)
    with pytest.raises(TypeError, match="names"):
        find_file([], "/tmp")


def test_real_data_found_by_default(real_data_dir):
    # Run from the checkout, the shared data is located without any configuration.
    assert (real_data_dir / "ptb" / "ptb.valid.txt").is_file()
    assert Path(find_file("ptb/ptb.valid.txt")).is_file()
