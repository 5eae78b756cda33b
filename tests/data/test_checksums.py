import gzip
import hashlib

import pytest

from torchtcn.data.checksums import KNOWN_MD5, content_md5, known_md5, verify, verify_known


def test_md5_of_plain_file_in_chunks(tmp_path):
    data = bytes(range(256)) * 10_000  # > 1 MiB: several chunks
    p = tmp_path / "blob.bin"
    p.write_bytes(data)
    assert content_md5(p) == hashlib.md5(data).hexdigest()
    verify(p, hashlib.md5(data).hexdigest())


def test_gz_is_hashed_by_content(tmp_path):
    data = b"hello idx" * 1000
    raw, gz1, gz9 = tmp_path / "a", tmp_path / "a.gz", tmp_path / "b.gz"
    raw.write_bytes(data)
    gz1.write_bytes(gzip.compress(data, compresslevel=1))
    gz9.write_bytes(gzip.compress(data, compresslevel=9, mtime=123))
    want = hashlib.md5(data).hexdigest()
    assert content_md5(raw) == content_md5(gz1) == content_md5(gz9) == want
    # Explicitly hashing the compressed bytes is possible too.
    assert content_md5(gz1, decompress=False) == hashlib.md5(gz1.read_bytes()).hexdigest()


def test_mismatch_names_file_expected_and_found(tmp_path):
    p = tmp_path / "ptb.valid.txt"
    p.write_text("not ptb\n")
    found = hashlib.md5(b"not ptb\n").hexdigest()
    with pytest.raises(ValueError) as e:
        verify(p, KNOWN_MD5["ptb.valid.txt"])
    msg = str(e.value)
    assert str(p) in msg and KNOWN_MD5["ptb.valid.txt"] in msg and found in msg
    with pytest.raises(ValueError):
        verify_known(p)


def test_truncated_gz_is_value_error(tmp_path):
    p = tmp_path / "t.gz"
    p.write_bytes(gzip.compress(b"x" * 100_000)[:-20])
    with pytest.raises(ValueError, match="t.gz"):
        content_md5(p)


def test_bad_expected_digest():
    with pytest.raises(ValueError, match="32-character"):
        verify(__file__, "abc")


def test_known_md5_lookup():
    assert known_md5("/x/train-images-idx3-ubyte.gz") == "6bbc9ace898e44ae57da46a324031adb"
    assert known_md5("train-images-idx3-ubyte") == "6bbc9ace898e44ae57da46a324031adb"
    assert known_md5("Nottingham.mat") == "7cc53d4cad543cf589d8769ae59c556a"
    assert known_md5("unknown.txt") is None
    assert verify_known(__file__) is False


def test_real_files_match(real_data_dir):
    for rel in ["ptb/ptb.valid.txt", "ptb/ptb.test.txt", "mnist/t10k-labels-idx1-ubyte.gz",
                "music/JSB_Chorales.mat", "music/Nottingham.mat"]:
        p = real_data_dir / rel
        if p.is_file():
            assert verify_known(p) is True
