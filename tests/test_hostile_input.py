"""Hostile and corrupted input: crafted model files, configs and data files.

Every case must end in a ``ValueError``/``TypeError`` (or ``FileNotFoundError``) whose message
names the file and the problem; none may run code, allocate what the file cannot hold, or
load something silently different. The "never runs code" cases use a pickle whose
``__reduce__`` creates a marker file, and first prove that the payload is live.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import pathlib
import pickle
import struct
import zipfile

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import torchtcn
from torchtcn.configs import config_from_dict
from torchtcn.data import load_mnist, load_piano_rolls, load_text_corpus, read_idx
from torchtcn.model import TCNConfig
from torchtcn.registry import model_spec

# --------------------------------------------------------------------------- helpers


class Payload:
    """Unpickling this creates ``marker``: the stand-in for arbitrary code execution."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def malicious_pickles(marker: pathlib.Path) -> dict[str, bytes]:
    """The same payload as every pickle protocol and as a ``torch.save`` zip archive."""
    out = {f"protocol{p}": pickle.dumps(Payload(marker), protocol=p) for p in range(6)}
    buf = io.BytesIO()
    torch.save({"state_dict": Payload(marker)}, buf)
    out["torch_save"] = buf.getvalue()
    return out


def test_the_payload_is_live(tmp_path):
    """Guard: unpickling the payload really creates the marker, so its absence below means
    the loaders never unpickled anything."""
    marker = tmp_path / "pwned"
    for name, blob in malicious_pickles(marker).items():
        if name == "torch_save":
            torch.load(io.BytesIO(blob), weights_only=False)
        else:
            pickle.loads(blob)
        assert marker.exists(), name
        marker.unlink()


def raw_safetensors(path: pathlib.Path, header, data: bytes = b"", length: int | None = None):
    """Write ``<u64 length><header><data>``; ``header`` is JSON-encoded unless bytes."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    n = len(raw) if length is None else length
    path.write_bytes(struct.pack("<Q", n) + raw + data)
    return path


def torchtcn_meta(spec) -> dict:
    return {"torchtcn_format": "1", "torchtcn_model": spec if isinstance(spec, str) else json.dumps(spec)}


def write_model_file(path, tensors: dict, spec) -> pathlib.Path:
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=torchtcn_meta(spec))
    return path


@pytest.fixture
def small():
    return torchtcn.TCN(2, [3, 3], kernel_size=2)


# --------------------------------------------------------------------------- safetensors headers


@pytest.mark.parametrize(
    "name, header, length, match",
    [
        ("empty", b"", 0, "not JSON"),
        ("past_eof", b"{}", 10_000, "header claims 10000 bytes"),
        ("huge_length", b"{}", 2**63, "header claims"),
        ("list", b"[1, 2, 3]", None, "not a JSON object"),
        ("string", b'"a string"', None, "not a JSON object"),
        ("number", b"42", None, "not a JSON object"),
        ("null", b"null", None, "not a JSON object"),
        ("not_utf8", b"\xff\xfe{}", None, "not JSON"),
        ("truncated_json", b'{"__metadata__": {"torchtcn_format": "1"', None, "not JSON"),
        ("deeply_nested", b"[" * 50_000 + b"]" * 50_000, None, "not JSON"),
    ],
)
def test_malformed_header(tmp_path, name, header, length, match):
    path = raw_safetensors(tmp_path / f"{name}.safetensors", header, length=length)
    with pytest.raises(ValueError, match=match) as err:
        torchtcn.load(path)
    assert str(path) in str(err.value)


def test_file_shorter_than_the_length_field(tmp_path):
    path = tmp_path / "seven.safetensors"
    path.write_bytes(b"\x01" * 7)
    with pytest.raises(ValueError, match="only 7 bytes"):
        torchtcn.load(path)


@pytest.mark.parametrize(
    "meta, match",
    [
        (None, "not a torchtcn model"),
        ({"torchtcn_format": "99", "torchtcn_model": "{}"}, "format '99'"),
        ({"torchtcn_format": "1"}, "model description is missing"),
        ({"torchtcn_format": "1", "torchtcn_model": "{not json"}, "not JSON"),
        ({"torchtcn_format": "1", "torchtcn_model": 5}, "not JSON"),
        ({"torchtcn_format": "1", "torchtcn_model": {"name": "tcn"}}, "not JSON"),
        ({"torchtcn_format": "1", "torchtcn_model": "[1, 2]"}, "model spec must be a dict"),
        ({"torchtcn_format": "1", "torchtcn_model": '{"name": 3, "config": {}}'}, "name must be a str"),
    ],
)
def test_bad_metadata(tmp_path, meta, match):
    header = {} if meta is None else {"__metadata__": meta}
    path = raw_safetensors(tmp_path / "meta.safetensors", header)
    with pytest.raises(ValueError, match=match) as err:
        torchtcn.load(path)
    assert "meta.safetensors" in str(err.value)


def test_bad_tensor_table_entries(tmp_path, small):
    spec = model_spec(small)
    good = tmp_path / "good.safetensors"
    torchtcn.save(small, good)
    data = good.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header, body = json.loads(data[8 : 8 + n]), data[8 + n :]
    key = next(k for k in header if k != "__metadata__")
    for i, mutate in enumerate(
        [
            lambda e: e.update(shape="3"),
            lambda e: e.update(shape=[-1, 2]),
            lambda e: e.update(dtype="NOT_A_DTYPE"),
            lambda e: e.update(data_offsets=[len(body), len(body) + 4]),
            lambda e: e.update(data_offsets=[8, 4]),
            lambda e: e.clear(),
        ]
    ):
        bad_header = json.loads(json.dumps(header))
        mutate(bad_header[key])
        path = raw_safetensors(tmp_path / f"table{i}.safetensors", bad_header, body)
        with pytest.raises(ValueError, match=f"table{i}.safetensors"):
            torchtcn.load(path)
    assert spec == model_spec(torchtcn.load(good))


def test_small_file_describing_a_huge_model_allocates_nothing(tmp_path):
    """A few hundred bytes claiming a model of petabytes: rejected from the tensor table
    before the model is built (were it built, this test would die of memory)."""
    spec = {"name": "tcn", "config": {"in_channels": 1, "channels": [10**6] * 4, "kernel_size": 1000}}
    path = raw_safetensors(tmp_path / "huge.safetensors", {"__metadata__": torchtcn_meta(spec)})
    with pytest.raises(ValueError, match="huge.safetensors: weights do not match.*missing"):
        torchtcn.load(path)
    # the same with a tensor table that matches the huge model but not the file's size
    header = {"__metadata__": torchtcn_meta(spec)}
    header["blocks.0.unit1.conv.bias"] = {"dtype": "F32", "shape": [10**6], "data_offsets": [0, 4 * 10**6]}
    path = raw_safetensors(tmp_path / "huge2.safetensors", header, b"\0" * 16)
    with pytest.raises(ValueError, match="huge2.safetensors"):
        torchtcn.load(path)


def test_tensor_of_the_wrong_shape_or_an_extra_tensor(tmp_path, small):
    spec = model_spec(small)
    sd = dict(small.state_dict())
    key = next(iter(sd))
    wrong = dict(sd, **{key: torch.zeros(7, 7)})
    with pytest.raises(ValueError, match=r"wrong shapes \[.*\[7, 7\]"):
        torchtcn.load(write_model_file(tmp_path / "shape.safetensors", wrong, spec))
    extra = dict(sd, evil=torch.zeros(1))
    with pytest.raises(ValueError, match=r"unexpected \['evil'\]"):
        torchtcn.load(write_model_file(tmp_path / "extra.safetensors", extra, spec))
    missing = {k: v for k, v in sd.items() if k != key}
    with pytest.raises(ValueError, match=f"missing \\['{key}'\\]"):
        torchtcn.load(write_model_file(tmp_path / "missing.safetensors", missing, spec))


def test_directory_instead_of_a_file(tmp_path):
    with pytest.raises(ValueError, match="is a directory"):
        torchtcn.load(tmp_path)


# --------------------------------------------------------------------------- configs


BASE = {"in_channels": 1, "channels": [4, 4], "kernel_size": 3}


@pytest.mark.parametrize(
    "change, error, match",
    [
        ({"kernel_size": "3"}, TypeError, "kernel_size must be an int, got str"),
        ({"kernel_size": 3.0}, TypeError, "kernel_size must be an int, got float"),
        ({"kernel_size": True}, TypeError, "kernel_size must be an int, got bool"),
        ({"kernel_size": None}, TypeError, "kernel_size must be an int"),
        ({"channels": "25,25"}, TypeError, "channels must be a list, got str"),
        ({"channels": 25}, TypeError, "channels must be a list, got int"),
        ({"channels": [4, "4"]}, TypeError, r"channels\[1\] must be an int"),
        ({"channels": {"a": 1}}, TypeError, "channels must be a list, got dict"),
        ({"dilations": [1, 2.5]}, TypeError, r"dilations\[1\] must be an int"),
        ({"causal": "yes"}, TypeError, "causal must be bool, got str"),
        ({"causal": 1}, TypeError, "causal must be bool, got int"),
        ({"dropout": "0.1"}, TypeError, "dropout must be a number, got str"),
        ({"dropout": float("nan")}, ValueError, "dropout must be a number, got NaN"),
        ({"init_std": float("nan")}, ValueError, "init_std must be a number, got NaN"),
        ({"norm": "instance"}, ValueError, "norm must be one of"),
        ({"kernels": 3}, ValueError, r"unknown TCNConfig key\(s\) \['kernels'\]; valid keys are"),
        ({"__class__": "os.system"}, ValueError, "unknown TCNConfig key"),
        ({"in_channels": -1}, ValueError, "in_channels must be >= 1"),
        ({"channels": []}, ValueError, "at least one block"),
        ({"dilations": [1]}, ValueError, "one entry per block"),
    ],
)
def test_config_wrong_types_and_unknown_keys(change, error, match):
    with pytest.raises(error, match=match):
        config_from_dict(TCNConfig, {**BASE, **change})


def test_config_not_a_dict_or_missing_required_key():
    with pytest.raises(TypeError, match="must be read from a dict, got list"):
        config_from_dict(TCNConfig, [1, [4]])
    with pytest.raises(ValueError, match="missing the required key 'channels'"):
        config_from_dict(TCNConfig, {"in_channels": 1})


@pytest.mark.parametrize(
    "change, match",
    [
        ({"kernel_size": "3"}, "kernel_size must be an int"),
        ({"channels": [10**30]}, "invalid model config"),
        ({"init_std": float("nan")}, "init_std must be"),
        ({"unknown": 1}, "unknown TCNConfig key"),
    ],
)
def test_bad_config_inside_a_model_file(tmp_path, small, change, match):
    spec = model_spec(small)
    spec["config"].update(change)
    path = write_model_file(tmp_path / "cfg.safetensors", small.state_dict(), spec)
    with pytest.raises(ValueError, match=match) as err:
        torchtcn.load(path)
    assert "cfg.safetensors" in str(err.value)


# --------------------------------------------------------------------------- pickles


def test_pickle_renamed_to_safetensors_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    for name, blob in malicious_pickles(marker).items():
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(blob)
        with pytest.raises(ValueError, match=f"{name}.safetensors"):
            torchtcn.load(path)
        assert not marker.exists(), f"loading {name} ran code"


def test_pickle_inside_safetensors_metadata_is_inert(tmp_path, small):
    """Pickled bytes smuggled into the header metadata are only ever a string."""
    marker = tmp_path / "pwned"
    blob = pickle.dumps(Payload(marker), protocol=0).decode("latin-1")
    path = tmp_path / "smuggled.safetensors"
    torchtcn.save(small, path, metadata={"extra": blob})
    loaded = torchtcn.load(path)
    assert type(loaded) is torchtcn.TCN and not marker.exists()
    write_model_file(tmp_path / "spec.safetensors", small.state_dict(), blob)
    with pytest.raises(ValueError, match="not JSON"):
        torchtcn.load(tmp_path / "spec.safetensors")
    assert not marker.exists()


def test_pickle_renamed_as_data_files_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    for name, blob in malicious_pickles(marker).items():
        mat = tmp_path / f"{name}.mat"
        mat.write_bytes(blob)
        with pytest.raises(ValueError, match=f"{name}.mat"):
            load_piano_rolls(mat)
        idx = tmp_path / f"{name}-idx3-ubyte.gz"
        idx.write_bytes(gzip.compress(blob))
        with pytest.raises(ValueError, match=idx.name):
            read_idx(idx)
        assert not marker.exists(), name
    # protocol >= 2 pickles are binary (not UTF-8) and rejected as text; protocol 0 is
    # printable text and may legitimately be read as a corpus, but is still never unpickled
    for name in ("protocol0", "protocol4"):
        corpus = tmp_path / f"corpus_{name}"
        corpus.mkdir()
        for split in ("train", "valid", "test"):
            (corpus / f"{split}.txt").write_bytes(malicious_pickles(marker)[name])
        try:
            load_text_corpus(corpus, oov="unk")
        except ValueError as e:
            assert "train.txt" in str(e) and name != "protocol0"
        assert not marker.exists(), name


# --------------------------------------------------------------------------- data files


def idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    head = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return head + array.astype(">u1").tobytes()


@pytest.fixture
def good_idx():
    return idx_bytes(np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28))


def test_idx_round_trip_guard(tmp_path, good_idx):
    path = tmp_path / "ok-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(good_idx))
    assert read_idx(path).shape == (2, 28, 28)


@pytest.mark.parametrize(
    "name, make, match",
    [
        ("truncated_gz", lambda b: gzip.compress(b)[:-40], "corrupt or truncated gzip|truncated IDX"),
        ("truncated_data", lambda b: gzip.compress(b[:-100]), "truncated IDX file: data of shape"),
        ("truncated_magic", lambda b: gzip.compress(b[:3]), "4-byte magic"),
        ("oversized", lambda b: gzip.compress(b + b"\0"), "oversized IDX file"),
        ("wrong_magic", lambda b: gzip.compress(b"\x01\x02" + b[2:]), "two zero bytes"),
        ("bad_type_code", lambda b: gzip.compress(b[:2] + b"\x42" + b[3:]), "unknown IDX type code 0x42"),
        ("zero_dims", lambda b: gzip.compress(b[:3] + b"\x00"), "0 dimensions"),
        ("absurd_dims", lambda b: gzip.compress(b[:4] + struct.pack(">3I", 2**31, 2**31, 2)), "implausibly large"),
        ("gzip_garbage", lambda b: b"\x1f\x8b" + os.urandom(200), "corrupt or truncated gzip"),
        ("text", lambda b: b"this is a text file, not IDX\n" * 5, "two zero bytes"),
        ("empty", lambda b: b"", "4-byte magic"),
    ],
)
def test_corrupted_idx(tmp_path, good_idx, name, make, match):
    path = tmp_path / f"{name}-idx3-ubyte.gz"
    path.write_bytes(make(good_idx))
    with pytest.raises(ValueError, match=match) as err:
        read_idx(path)
    assert str(path) in str(err.value)


def test_corrupted_mnist_directory(tmp_path, good_idx):
    """Through the public loader: a data directory whose label file is corrupted."""
    mnist = tmp_path / "mnist"
    mnist.mkdir()
    (mnist / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(good_idx))
    labels = mnist / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(bytes([0, 0, 8, 1]) + struct.pack(">I", 5) + b"\x01\x02"))
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.gz: truncated IDX"):
        load_mnist(tmp_path, "test", verify=False)
    labels.write_bytes(gzip.compress(bytes([0, 0, 8, 1]) + struct.pack(">I", 2) + b"\x01\xff"))
    with pytest.raises(ValueError, match=r"labels must be in 0\.\.9, found 255"):
        load_mnist(tmp_path, "test", verify=False)


def _savemat(path, **arrays):
    scipy_io = pytest.importorskip("scipy.io")
    scipy_io.savemat(str(path), arrays)
    return path


def _cell(*items):
    cell = np.empty((1, len(items)), dtype=object)
    for i, item in enumerate(items):
        cell[0, i] = item
    return cell


def test_corrupted_mat_files(tmp_path):
    pytest.importorskip("scipy.io")
    roll = (np.random.default_rng(0).random((5, 88)) > 0.8).astype(np.float64)
    good = _savemat(tmp_path / "good.mat", traindata=_cell(roll), validdata=_cell(roll), testdata=_cell(roll))
    assert load_piano_rolls(good)["train"][0].shape == (5, 88)
    data = good.read_bytes()
    cases = {
        "text.mat": b"MATLAB? no, just text\n" * 20,
        "garbage.mat": os.urandom(4096),
        "empty.mat": b"",
        "truncated.mat": data[: len(data) // 2],
        "header_only.mat": data[:128],
        "hdf5.mat": b"\x89HDF\r\n\x1a\n" + bytes(200),
        "zip.mat": _zip_bytes(),
    }
    for name, blob in cases.items():
        path = tmp_path / name
        path.write_bytes(blob)
        with pytest.raises(ValueError, match=name) as err:
            load_piano_rolls(path)
        assert str(path) in str(err.value)


def _zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("traindata", "not a matrix")
    return buf.getvalue()


@pytest.mark.parametrize(
    "arrays, match",
    [
        (dict(traindata=np.zeros((3, 88))), "missing key"),
        (dict(traindata=np.zeros((3, 88)), validdata=np.zeros(1), testdata=np.zeros(1)), "must be a cell array"),
        (dict(traindata=_cell(np.zeros((4, 87))), validdata=_cell(np.zeros((4, 88))), testdata=_cell(np.zeros((4, 88)))), r"shape \(T, 88\)"),
        (dict(traindata=_cell(np.full((4, 88), 2.0)), validdata=_cell(np.zeros((4, 88))), testdata=_cell(np.zeros((4, 88)))), "must be binary"),
        (dict(traindata=_cell("a string"), validdata=_cell(np.zeros((4, 88))), testdata=_cell(np.zeros((4, 88)))), "numeric"),
    ],
)
def test_mat_files_of_the_wrong_structure(tmp_path, arrays, match):
    path = _savemat(tmp_path / "structure.mat", **arrays)
    with pytest.raises(ValueError, match=match) as err:
        load_piano_rolls(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    "name, blob",
    [
        ("random_bytes", os.urandom(2048)),
        ("latin1", "caf\xe9 na\xefve\n".encode("latin-1") * 10),
        ("gzip", gzip.compress(b"hello world\n" * 50)),
        ("utf16", "hello world\n".encode("utf-16")),
        ("nul_bytes", b"hello\x00world\n" * 10),  # valid UTF-8, but binary
    ],
)
def test_binary_garbage_as_a_text_corpus(tmp_path, name, blob):
    corpus = tmp_path / name
    corpus.mkdir()
    for split in ("train", "valid", "test"):
        (corpus / f"{split}.txt").write_text("hello world\n")
    (corpus / "valid.txt").write_bytes(blob)
    with pytest.raises(ValueError, match="valid.txt: not (UTF-8 text|a text file)") as err:
        load_text_corpus(corpus)
    assert str(corpus / "valid.txt") in str(err.value)


def test_empty_training_text(tmp_path):
    corpus = tmp_path / "empty"
    corpus.mkdir()
    for split in ("train", "valid", "test"):
        (corpus / f"{split}.txt").write_text("" if split == "train" else "a b\n")
    with pytest.raises(ValueError, match="train.txt: the training text is empty"):
        load_text_corpus(corpus)


# --------------------------------------------------------------------------- training checkpoints


def test_pickle_renamed_to_a_checkpoint_never_runs(tmp_path):
    from torchtcn.checkpoint import load_checkpoint

    marker = tmp_path / "pwned"
    for name, blob in malicious_pickles(marker).items():
        path = tmp_path / f"{name}.ckpt"
        path.write_bytes(blob)
        with pytest.raises(ValueError, match=f"{name}.ckpt"):
            load_checkpoint(path)
        assert not marker.exists(), name


def test_checkpoint_describing_a_huge_model_allocates_nothing(tmp_path):
    from torchtcn.checkpoint import CHECKPOINT_KEY, load_checkpoint, read_checkpoint_state, save_checkpoint

    good = tmp_path / "good.ckpt"
    save_checkpoint(good, torchtcn.TCN(1, [4], kernel_size=2), trainer_state={"epoch": 1})
    doc = read_checkpoint_state(good)
    doc["model"]["config"].update(channels=[10**6] * 4, kernel_size=1000)
    tensors = {"model.w": torch.zeros(2)}
    path = tmp_path / "huge.ckpt"
    save_file(tensors, str(path), metadata={CHECKPOINT_KEY: json.dumps(doc)})
    with pytest.raises(ValueError, match="huge.ckpt: weights do not match the stored architecture"):
        load_checkpoint(path)
    doc["model"]["config"].update(channels=[10**30])
    save_file(tensors, str(path), metadata={CHECKPOINT_KEY: json.dumps(doc)})
    with pytest.raises(ValueError, match="huge.ckpt: invalid model spec"):
        load_checkpoint(path)


def test_a_music_split_left_empty_is_named_before_training(tmp_path, caplog, capsys):
    # every valid piece has one frame (nothing to predict): an error naming the split, not a
    # KeyError after the first epoch
    roll = (np.random.default_rng(0).random((5, 88)) > 0.8).astype(np.float64)
    path = _savemat(tmp_path / "short.mat", traindata=_cell(roll), validdata=_cell(roll[:1]),
                    testdata=_cell(roll))
    from torchtcn.cli import main
    argv = ["train", "music", "--data", str(path), "--out", str(tmp_path / "run"), "--quiet",
            "--no-tensorboard", "epochs=1", "channels=4*2"]
    assert main(argv) == 2
    assert "the valid split is empty (0 examples)" in capsys.readouterr().err
    assert "skipped 1 of 1 pieces with fewer than 2 frames" in caplog.text
    assert not (tmp_path / "run" / "last.ckpt").exists()
