import pickle
import shutil

import numpy as np
import pytest
import torch

scipy_io = pytest.importorskip("scipy.io")

from torchtcn.data import load_piano_rolls  # noqa: E402


def cell(mats):
    arr = np.empty((1, len(mats)), dtype=object)
    for i, m in enumerate(mats):
        arr[0, i] = m
    return arr


def rolls(n, rng, T=(3, 9), cols=88):
    return [(rng.random((int(rng.integers(*T)), cols)) < 0.1).astype(np.uint8) for _ in range(n)]


def write_mat(path, **splits):
    scipy_io.savemat(str(path), {k: cell(v) for k, v in splits.items()})


@pytest.fixture
def good_mat(tmp_path):
    rng = np.random.default_rng(0)
    data = {"traindata": rolls(4, rng), "validdata": rolls(2, rng), "testdata": rolls(3, rng)}
    p = tmp_path / "mine.mat"
    write_mat(p, **data)
    return p, data


def test_user_mat_roundtrip(good_mat):
    p, data = good_mat
    out = load_piano_rolls(p)
    assert set(out) == {"train", "valid", "test"}
    for split, key in (("train", "traindata"), ("valid", "validdata"), ("test", "testdata")):
        assert len(out[split]) == len(data[key])
        for t, m in zip(out[split], data[key]):
            assert t.dtype == torch.float32 and t.shape == m.shape and t.shape[1] == 88
            assert np.array_equal(t.numpy(), m)
    assert load_piano_rolls(str(p))["train"][0].shape == out["train"][0].shape


def test_sparse_and_empty_pieces_load(tmp_path):
    """MATLAB's sparse() pieces load as their dense rolls; an empty (0 x 88) piece loads
    (the training set skips it, like a 1-frame piece) instead of failing the whole file."""
    import scipy.sparse

    rng = np.random.default_rng(3)
    dense = rolls(3, rng)
    p = tmp_path / "sparse.mat"
    write_mat(p, traindata=[scipy.sparse.csc_matrix(m) for m in dense] + [np.zeros((0, 88), np.uint8)],
              validdata=dense[:1], testdata=dense[1:2])
    out = load_piano_rolls(p)
    assert [t.shape[0] for t in out["train"]] == [m.shape[0] for m in dense] + [0]
    for t, m in zip(out["train"], dense):
        assert np.array_equal(t.numpy(), m)
    from torchtcn.tasks.music import PianoRollDataset

    assert len(PianoRollDataset(out["train"])) == 3


def test_missing_key(tmp_path):
    rng = np.random.default_rng(1)
    p = tmp_path / "x.mat"
    write_mat(p, traindata=rolls(2, rng), testdata=rolls(1, rng))
    with pytest.raises(ValueError, match=r"x.mat.*validdata"):
        load_piano_rolls(p)


@pytest.mark.parametrize(
    "bad, pattern",
    [
        (np.zeros((5, 87), np.uint8), r"\(T, 88\)"),
        (np.full((5, 88), 2, np.uint8), "binary"),
        (np.full((5, 88), 0.5), "binary"),
    ],
)
def test_bad_piece(tmp_path, bad, pattern):
    rng = np.random.default_rng(2)
    p = tmp_path / "bad.mat"
    write_mat(p, traindata=rolls(2, rng) + [bad], validdata=rolls(1, rng), testdata=rolls(1, rng))
    with pytest.raises(ValueError, match=pattern) as e:
        load_piano_rolls(p)
    assert "bad.mat" in str(e.value) and "traindata[2]" in str(e.value)


def test_not_a_cell_array(tmp_path):
    p = tmp_path / "flat.mat"
    scipy_io.savemat(str(p), {"traindata": np.zeros((3, 88)), "validdata": np.zeros((3, 88)),
                              "testdata": np.zeros((3, 88))})
    with pytest.raises(ValueError, match="cell array"):
        load_piano_rolls(p)


class _Evil:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.target),))


@pytest.mark.parametrize("kind", ["text", "pickle", "empty", "truncated", "hdf5"])
def test_corrupt_files_raise_without_executing(tmp_path, kind, good_mat):
    p = tmp_path / "corrupt.mat"
    sentinel = tmp_path / "pwned"
    if kind == "text":
        p.write_text("traindata validdata testdata\n" * 20)
    elif kind == "pickle":
        p.write_bytes(pickle.dumps({"traindata": _Evil(sentinel)}))
    elif kind == "empty":
        p.write_bytes(b"")
    elif kind == "truncated":
        data = good_mat[0].read_bytes()
        p.write_bytes(data[: len(data) // 2])
    else:
        p.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 600)
    with pytest.raises(ValueError) as e:
        load_piano_rolls(p)
    assert str(p) in str(e.value)
    assert not sentinel.exists()


def test_missing_path_and_bad_type(tmp_path):
    with pytest.raises(FileNotFoundError, match="named set"):
        load_piano_rolls(tmp_path / "nope.mat")
    with pytest.raises(TypeError):
        load_piano_rolls(3)


def test_named_set_is_checksummed(tmp_path, good_mat):
    (tmp_path / "music").mkdir()
    shutil.copy(good_mat[0], tmp_path / "music" / "JSB_Chorales.mat")
    with pytest.raises(ValueError, match="checksum mismatch"):
        load_piano_rolls("JSB", tmp_path)
    out = load_piano_rolls("JSB_Chorales", tmp_path, verify=False)
    assert len(out["train"]) == 4
    with pytest.raises(FileNotFoundError, match="Nottingham"):
        load_piano_rolls("Nott", tmp_path)
    # By path, a file with a known name is checked too.
    with pytest.raises(ValueError, match="checksum mismatch"):
        load_piano_rolls(tmp_path / "music" / "JSB_Chorales.mat")


@pytest.mark.parametrize("name, counts, max_len", [
    ("JSB_Chorales", (229, 76, 77), None),
    ("Nottingham", (694, 173, 170), 1793),
])
def test_real_sets(real_music_dir, name, counts, max_len):
    out = load_piano_rolls(name, real_music_dir)
    by_path = load_piano_rolls(real_music_dir / "music" / f"{name}.mat")
    assert all(torch.equal(a, b) for s in out for a, b in zip(out[s], by_path[s]))
    assert tuple(len(out[s]) for s in ("train", "valid", "test")) == counts
    lens = [t.shape[0] for s in out.values() for t in s]
    assert all(t.shape[1] == 88 and t.dtype == torch.float32 for s in out.values() for t in s)
    if max_len is not None:
        assert max(lens) == max_len
