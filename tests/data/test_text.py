import zipfile

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from torchtcn.data import Corpus, Dictionary, batchify, history_windows, load_ptb, load_text8
from torchtcn.data import load_text_corpus, load_wikitext103
from torchtcn.data.text import EOS, UNK, UNK_CHAR, remove_leading_space, tokenize_words


# ----------------------------------------------------------------------------- dictionary


def test_dictionary_basics():
    d = Dictionary(["a", "b", "a"])
    assert len(d) == 2 and d.symbols == ["a", "b"]
    assert d.add("c") == 2 and d.add("a") == 0
    assert d.index("c") == 2 and d[1] == "b" and "b" in d and "z" not in d
    assert list(d) == ["a", "b", "c"]
    assert d == Dictionary("abc")
    with pytest.raises(ValueError, match="'z'"):
        d.index("z")
    with pytest.raises(TypeError):
        d.add(3)
    assert d.decode(torch.tensor([2, 0])) == "ca"
    assert d.decode([0, 1], sep=" ") == "a b"


def test_encode_tokens_unknown():
    d = Dictionary(["x", "y", UNK])
    assert d.encode_tokens(["y", "x"]).tolist() == [1, 0]
    with pytest.raises(ValueError, match=r"'zz'.*position 1"):
        d.encode_tokens(["x", "zz", "zz"], where="valid")
    assert d.encode_tokens(["x", "zz"], unk=UNK).tolist() == [0, 2]


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=1, max_size=200), st.text(max_size=200))
def test_char_encoding_matches_naive_loop(train, other):
    d = Dictionary(sorted(set(train)))
    ids = d.lookup_chars(other)
    naive = [d.index(c) if c in d else -1 for c in other]
    assert ids.tolist() == naive
    assert d.decode(d.encode_chars(train)) == train


def test_char_lut_ignores_multichar_symbols_and_updates():
    d = Dictionary(["<eos>", "a"])
    assert d.lookup_chars("a<").tolist() == [1, -1]
    d.add("<")
    assert d.lookup_chars("a<").tolist() == [1, 2]


# ----------------------------------------------------------------------------- corpus


def test_tokenize_words_eos_per_line():
    assert tokenize_words("a b\n\nc\n") == ["a", "b", EOS, EOS, "c", EOS]
    assert tokenize_words("a b\nc") == ["a", "b", EOS, "c", EOS]
    assert tokenize_words("a  b \n", add_eos=False) == ["a", "b"]
    assert tokenize_words("") == []


def test_word_corpus_vocab_from_train_and_oov():
    c = Corpus.from_texts(" the cat\n the dog\n", " the dog\n", " cat\n")
    assert c.dictionary.symbols == ["the", "cat", EOS, "dog"]
    assert c.train.tolist() == [0, 1, 2, 0, 3, 2]
    assert c.valid.tolist() == [0, 3, 2] and c.test.tolist() == [1, 2]
    assert c.train.dtype == torch.int64 and c.level == "word"
    assert torch.equal(c.split("valid"), c.valid)
    with pytest.raises(ValueError, match=r"test.txt.*'bird'"):
        Corpus.from_texts("the cat\n", "cat\n", "the bird\n", names=["train.txt", "valid.txt", "test.txt"])
    c = Corpus.from_texts("the cat\n", "cat\n", "the bird\n", oov="unk")
    assert c.dictionary.symbols[-1] == UNK and c.test.tolist() == [0, 3, 2]
    with pytest.raises(ValueError, match="oov"):
        Corpus.from_texts("a\n", "a\n", "a\n", oov="drop")
    with pytest.raises(ValueError, match="level"):
        Corpus.from_texts("a\n", "a\n", "a\n", level="byte")
    with pytest.raises(TypeError):
        Corpus.from_texts(b"a\n", "a\n", "a\n")
    with pytest.raises(ValueError, match="empty"):
        Corpus.from_texts("", "a\n", "a\n")


def test_char_corpus_line_convention():
    c = Corpus.from_texts(" ab c\n ba\n", " cab\n", " a\n", level="char", strip_leading_space=True)
    assert c.dictionary.symbols == ["\n", " ", "a", "b", "c"]
    assert c.dictionary.decode(c.train) == "ab c\nba\n"
    assert c.train.numel() == len(" ab c\n ba\n") - 2  # one leading space per line
    assert remove_leading_space("  x\n y\nz") == " x\ny\nz"


def test_char_corpus_unknown_chars():
    # No unknowns: no <unk> symbol is added.
    c = Corpus.from_texts("abc", "cab", "a", level="char")
    assert len(c.dictionary) == 3
    c = Corpus.from_texts("abc", "abz", "é", level="char")
    assert c.dictionary.symbols == ["a", "b", "c", UNK_CHAR]
    assert c.valid.tolist() == [0, 1, 3] and c.test.tolist() == [3]
    with pytest.raises(ValueError, match="'z'"):
        Corpus.from_texts("abc", "abz", "a", level="char", oov="error")


# ----------------------------------------------------------------------------- batching


def test_batchify_contiguous_and_drops_remainder():
    s = batchify(torch.arange(11), 3)
    assert s.tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert batchify(torch.arange(6), 1).shape == (1, 6)
    with pytest.raises(ValueError, match="non-empty"):
        batchify(torch.arange(2), 3)
    with pytest.raises(ValueError, match="n_streams"):
        batchify(torch.arange(6), 0)
    with pytest.raises(TypeError):
        batchify(torch.zeros(2, 3), 1)


@settings(max_examples=150, deadline=None)
@given(L=st.integers(2, 60), seq_len=st.integers(1, 20), data=st.data())
def test_history_windows_score_each_target_once(L, seq_len, data):
    valid_len = data.draw(st.integers(1, seq_len))
    streams = torch.arange(2 * L).view(2, L)
    windows = history_windows(streams, seq_len, valid_len)
    scored = []
    for k, (inp, tgt, n) in enumerate(windows):
        t = inp.shape[1]
        assert 1 <= t <= seq_len and tgt.shape == inp.shape and 1 <= n <= t
        assert torch.equal(tgt, inp + 1)  # target = input shifted one step ahead
        if k > 0:
            assert n <= valid_len
        scored += tgt[0, -n:].tolist()
    assert scored == list(range(1, L))  # every target exactly once, in order
    assert len(windows) == k + 1


def test_history_windows_reference_mode():
    streams = torch.arange(20).view(1, 20)
    w = list(history_windows(streams, 8, 4, score_warmup=False))
    # The first seq_len - valid_len = 4 targets are never scored (as in locuslab/TCN).
    scored = [x for inp, tgt, n in w for x in tgt[0, -n:].tolist()]
    assert scored == list(range(5, 20))
    assert [(x.input.shape[1], x.n_scored) for x in w] == [(8, 4), (8, 4), (8, 4), (8, 3)]


def test_history_windows_validation():
    s = torch.zeros(2, 10, dtype=torch.long)
    with pytest.raises(ValueError, match="valid_len"):
        history_windows(s, 4, 5)
    with pytest.raises(ValueError, match="seq_len"):
        history_windows(s, 0, 1)
    with pytest.raises(ValueError, match="length >= 2"):
        history_windows(torch.zeros(2, 1), 4, 2)
    with pytest.raises(TypeError):
        history_windows(torch.zeros(10), 4, 2)


# ----------------------------------------------------------------------------- loaders


def write_split_files(d, names, texts):
    d.mkdir(parents=True, exist_ok=True)
    for n, t in zip(names, texts):
        (d / n).write_text(t, encoding="utf-8")


TEXTS = ("the cat sat\non the mat\n", "the mat\n", "cat sat on\n")


@pytest.mark.parametrize("names", [
    ("train.txt", "valid.txt", "test.txt"),
    ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"),
    ("wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens"),
])
def test_load_text_corpus_directory(tmp_path, names):
    write_split_files(tmp_path, names, TEXTS)
    c = load_text_corpus(tmp_path)
    assert c.train.numel() == 8 and c.valid.numel() == 3 and c.test.numel() == 4
    cc = load_text_corpus(tmp_path, level="char")
    assert cc.dictionary.decode(cc.train) == TEXTS[0]


def test_load_text_corpus_sequence_mapping_and_errors(tmp_path):
    write_split_files(tmp_path, ("a", "b", "c"), TEXTS)
    c1 = load_text_corpus([tmp_path / "a", tmp_path / "b", tmp_path / "c"])
    c2 = load_text_corpus({"train": tmp_path / "a", "valid": tmp_path / "b", "test": tmp_path / "c"})
    assert torch.equal(c1.train, c2.train) and c1.dictionary == c2.dictionary
    with pytest.raises(FileNotFoundError, match="train"):
        load_text_corpus(tmp_path / "nodir")
    with pytest.raises(FileNotFoundError, match="valid.txt"):
        write_split_files(tmp_path / "partial", ["train.txt"], ["x\n"])
        load_text_corpus(tmp_path / "partial")
    with pytest.raises(ValueError, match="missing"):
        load_text_corpus({"train": tmp_path / "a"})
    with pytest.raises(TypeError):
        load_text_corpus(42)
    (tmp_path / "bin").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ValueError, match="UTF-8"):
        load_text_corpus([tmp_path / "bin", tmp_path / "b", tmp_path / "c"])


def test_crlf_is_read_as_newline(tmp_path):
    (tmp_path / "train.txt").write_bytes(b" a b\r\n c\r\n")
    (tmp_path / "valid.txt").write_bytes(b" a\r\n")
    (tmp_path / "test.txt").write_bytes(b" b\n")
    c = load_text_corpus(tmp_path, level="char", strip_leading_space=True)
    assert c.dictionary.decode(c.train) == "a b\nc\n"


def test_byte_order_mark_is_not_part_of_the_text(tmp_path):
    """Files saved as "UTF-8 with BOM" (Notepad, Excel): the first word is "hello", not
    "\\ufeffhello" (which was out of the vocabulary in test), at word and at char level."""
    for name, text in (("train.txt", "hello world\n"), ("valid.txt", "world\n"), ("test.txt", "hello\n")):
        (tmp_path / name).write_bytes(b"\xef\xbb\xbf" + text.encode())
    words = load_text_corpus(tmp_path, level="word")
    assert words.dictionary.decode(words.test, sep=" ") == "hello <eos>"
    assert "\ufeff" not in "".join(words.dictionary)
    chars = load_text_corpus(tmp_path, level="char")
    assert chars.dictionary.decode(chars.train) == "hello world\n"


def test_load_wikitext103_small(tmp_path):
    d = tmp_path / "wikitext-103"
    texts = (" = Title = \n\n a <unk> b \n", " a b \n", " <unk> \n")
    write_split_files(d, ("wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens"), texts)
    for where in (d, tmp_path):  # the folder itself, or a data dir holding wikitext-103/
        c = load_wikitext103(where)
        assert c.level == "word" and c.train.numel() == 3 + 1 + 1 + 4
        assert c.dictionary.decode(c.test, sep=" ") == "<unk> <eos>"


def test_load_text8_zip_and_raw(tmp_path):
    text = " anarchism originated as a term of abuse first used against"
    raw = tmp_path / "text8"
    raw.write_text(text)
    z = tmp_path / "text8.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("text8", text)
    sizes = (40, 10, len(text) - 50)
    for p in (raw, z):
        c = load_text8(p, split_sizes=sizes)
        assert c.level == "char"
        assert (c.train.numel(), c.valid.numel(), c.test.numel()) == sizes
        assert c.dictionary.decode(c.train) + c.dictionary.decode(c.valid) == text[:50]
    assert load_text8(data_dir=tmp_path, split_sizes=sizes).train.numel() == 40
    for folder, inside in (("a", "text8.zip"), ("b", "text8/text8.zip")):  # a folder as --data
        (tmp_path / folder / inside).parent.mkdir(parents=True)
        (tmp_path / folder / inside).write_bytes(z.read_bytes())
        assert load_text8(tmp_path / folder, split_sizes=sizes).test.numel() == sizes[2]
    with pytest.raises(ValueError, match="add up to"):
        load_text8(raw)  # the default 90M/5M/5M split needs the real 100M-character file
    with pytest.raises(ValueError, match="three positive"):
        load_text8(raw, split_sizes=(1, 2))
    bad = tmp_path / "bad.zip"
    bad.write_bytes(z.read_bytes()[:-30])
    with pytest.raises(ValueError, match="bad.zip"):
        load_text8(bad, split_sizes=sizes)
    two = tmp_path / "two.zip"
    with zipfile.ZipFile(two, "w") as zf:
        zf.writestr("a", "x")
        zf.writestr("b", "y")
    with pytest.raises(ValueError, match="one member"):
        load_text8(two, split_sizes=(1, 1, 1))


def test_load_ptb_small_without_checksum(tmp_path):
    write_split_files(tmp_path / "ptb", ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"),
                      (" a b \n c \n", " a \n", " b c \n"))
    with pytest.raises(ValueError, match="checksum"):
        load_ptb(tmp_path)
    c = load_ptb(tmp_path, verify=False)
    assert c.train.numel() == 5
    cc = load_ptb(tmp_path, "char", verify=False)
    assert cc.dictionary.decode(cc.train) == "a b \nc \n"
    with pytest.raises(ValueError, match="level"):
        load_ptb(tmp_path, "byte")


# ----------------------------------------------------------------------------- real PTB


def test_real_ptb_word(real_data_dir):
    c = load_ptb(real_data_dir, "word")
    assert len(c.dictionary) == 10_000
    assert (c.train.numel(), c.valid.numel(), c.test.numel()) == (929_589, 73_760, 82_430)
    assert c.dictionary.decode(c.valid[:5], sep=" ").startswith("consumers may want to move")


def test_real_ptb_char_counts(real_data_dir):
    c = load_ptb(real_data_dir, "char")
    assert (c.train.numel(), c.valid.numel(), c.test.numel()) == (5_059_550, 396_412, 446_184)
    assert len(c.dictionary) == 50 and UNK_CHAR not in c.dictionary
    assert c.dictionary.decode(c.train[:16]) == "aer banknote ber"
    streams = batchify(c.train, 32)
    assert sum(w.n_scored for w in history_windows(streams, 400, 320)) == streams.shape[1] - 1


@settings(max_examples=80, deadline=None)
@given(st.text(alphabet="ab c\n\t\r", max_size=80))
def test_chunked_word_encoding_matches_tokenize(text):
    import torchtcn.data.text as T

    old = T._LINES_PER_CHUNK
    T._LINES_PER_CHUNK = 2  # many chunks
    try:
        if not tokenize_words(text):
            return
        c = Corpus.from_texts(text, "", "")
    finally:
        T._LINES_PER_CHUNK = old
    assert [c.dictionary[i] for i in c.train.tolist()] == tokenize_words(text)
    assert c.dictionary.symbols == list(dict.fromkeys(tokenize_words(text)))


def test_oov_position_across_chunks(monkeypatch):
    import torchtcn.data.text as T

    monkeypatch.setattr(T, "_LINES_PER_CHUNK", 1)
    with pytest.raises(ValueError, match=r"'zebra' \(position 4\)"):
        Corpus.from_texts("a b\n", "a b\na zebra\n", "a\n")
