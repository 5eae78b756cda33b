import gzip
import struct

import numpy as np
import pytest
import torch

from torchtcn.data import MNIST_MEAN, MNIST_STD, load_mnist, permutation, read_idx, sequential_mnist
from torchtcn.data.mnist import to_sequences


def idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    dt = {0x08: ">u1", 0x0C: ">i4", 0x0D: ">f4"}[code]
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(dt).tobytes()


def write_mnist(root, split="train", n=5, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=(n,), dtype=np.uint8)
    stem = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
            "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}[split]
    d = root / "mnist"
    d.mkdir(parents=True, exist_ok=True)
    for name, arr in zip(stem, (images, labels)):
        data = idx_bytes(arr)
        if gz:
            (d / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (d / name).write_bytes(data)
    return images, labels


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_roundtrip(tmp_path, gz):
    arr = np.arange(2 * 3 * 4, dtype=np.int32).reshape(2, 3, 4) - 7
    data = idx_bytes(arr, 0x0C)
    p = tmp_path / ("a.gz" if gz else "a")
    p.write_bytes(gzip.compress(data) if gz else data)
    t, md5 = read_idx(p, return_md5=True)
    assert t.dtype == torch.int32 and t.tolist() == arr.tolist()
    import hashlib

    assert md5 == hashlib.md5(data).hexdigest()
    f = idx_bytes(np.array([1.5, -2.0]), 0x0D)
    (tmp_path / "f").write_bytes(f)
    assert read_idx(tmp_path / "f").tolist() == [1.5, -2.0]


def test_gz_detected_by_magic_not_suffix(tmp_path):
    arr = np.array([1, 2, 3], dtype=np.uint8)
    p = tmp_path / "labels.raw"  # gzip content, misleading name
    p.write_bytes(gzip.compress(idx_bytes(arr)))
    assert read_idx(p).tolist() == [1, 2, 3]


@pytest.mark.parametrize(
    "mutate, pattern",
    [
        (lambda b: b"\x01" + b[1:], "magic"),
        (lambda b: b[:2] + b"\x07" + b[3:], "type code"),
        (lambda b: b[:3] + b"\x00" + b[4:], "dimensions"),
        (lambda b: b[:-1], "truncated"),
        (lambda b: b + b"\x00", "oversized"),
        (lambda b: b[:6], "truncated"),
        (lambda b: b"", "truncated"),
        (lambda b: b[:4] + struct.pack(">I", 0xFFFFFFFF) + b[8:], "implausibly large|truncated"),
    ],
)
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_rejects_bad_files(tmp_path, mutate, pattern, gz):
    good = idx_bytes(np.zeros((3, 4), dtype=np.uint8))
    bad = mutate(good)
    p = tmp_path / "bad-idx"
    p.write_bytes(gzip.compress(bad) if gz else bad)
    with pytest.raises(ValueError, match=pattern) as e:
        read_idx(p)
    assert str(p) in str(e.value)


def test_truncated_gzip_stream(tmp_path):
    data = gzip.compress(idx_bytes(np.zeros((50, 28, 28), dtype=np.uint8)))
    p = tmp_path / "train-images-idx3-ubyte.gz"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz"):
        read_idx(p)


@pytest.mark.parametrize("gz", [True, False])
def test_load_mnist_small(tmp_path, gz):
    images, labels = write_mnist(tmp_path, "test", n=7, gz=gz)
    # The names are those of the real files, so the known checksum applies and fails.
    with pytest.raises(ValueError, match="checksum"):
        load_mnist(tmp_path, "test")
    x, y = load_mnist(tmp_path, "test", verify=False)
    assert x.dtype == torch.uint8 and x.shape == (7, 28, 28)
    assert y.dtype == torch.int64 and y.tolist() == labels.tolist()
    assert np.array_equal(x.numpy(), images)


def test_load_mnist_validates(tmp_path):
    write_mnist(tmp_path, "train", n=4)
    d = tmp_path / "mnist"
    (d / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(3, np.uint8))))
    with pytest.raises(ValueError, match="4 images but .* 3 labels"):
        load_mnist(tmp_path, "train", verify=False)
    (d / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.full(4, 12, np.uint8))))
    with pytest.raises(ValueError, match="0..9"):
        load_mnist(tmp_path, "train", verify=False)
    (d / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros((4, 28, 27), np.uint8))))
    with pytest.raises(ValueError, match=r"\(N, 28, 28\)"):
        load_mnist(tmp_path, "train", verify=False)
    with pytest.raises(ValueError, match="split"):
        load_mnist(tmp_path, "validation")
    with pytest.raises(FileNotFoundError, match="t10k-images"):
        load_mnist(tmp_path, "test")


def test_sequential_normalisation_and_permutation(tmp_path):
    images, labels = write_mnist(tmp_path, "test", n=3)
    x, y = sequential_mnist(tmp_path, "test", verify=False)
    assert x.shape == (3, 1, 784) and x.dtype == torch.float32
    want = (torch.from_numpy(images).reshape(3, 1, 784).double() / 255 - MNIST_MEAN) / MNIST_STD
    torch.testing.assert_close(x.double(), want, rtol=0, atol=1e-5)
    p = permutation(3)
    xp, yp = sequential_mnist(tmp_path, "test", permutation=p, verify=False)
    assert torch.equal(xp, x[:, :, p]) and torch.equal(yp, y)


def test_permutation_is_seeded_and_private():
    torch.manual_seed(0)
    state = torch.get_rng_state()
    p1, p2, q = permutation(7), permutation(7), permutation(8)
    assert torch.equal(torch.get_rng_state(), state)  # global RNG untouched
    assert torch.equal(p1, p2) and not torch.equal(p1, q)
    assert p1.dtype == torch.int64 and torch.equal(p1.sort().values, torch.arange(784))
    with pytest.raises(TypeError):
        permutation(1.5)


def test_bad_permutation():
    imgs = torch.zeros(2, 28, 28, dtype=torch.uint8)
    with pytest.raises(ValueError, match="int64"):
        to_sequences(imgs, torch.arange(783))
    with pytest.raises(ValueError, match="exactly once"):
        to_sequences(imgs, torch.zeros(784, dtype=torch.long))
    with pytest.raises(TypeError):
        to_sequences(imgs.float())


@pytest.fixture(scope="module")
def real_test_split(real_mnist_dir):
    return load_mnist(real_mnist_dir, "test")


def test_real_mnist_test_split(real_test_split):
    x, y = real_test_split
    assert x.shape == (10_000, 28, 28) and y.shape == (10_000,)
    assert y[:5].tolist() == [7, 2, 1, 0, 4]
    assert torch.bincount(y, minlength=10).min() >= 890


def test_real_mnist_train_sequential(real_mnist_dir):
    x, y = sequential_mnist(real_mnist_dir, "train")
    assert x.shape == (60_000, 1, 784) and y.shape == (60_000,)
    # The constants are the training-set statistics.
    assert abs(x.mean().item()) < 1e-3 and abs(x.std().item() - 1) < 1e-3
    assert y[:5].tolist() == [5, 0, 4, 1, 9]
