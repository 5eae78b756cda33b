import pytest
import torch

from torchtcn.data import LambadaPassage, collate_passages, load_lambada
from torchtcn.data.text import EOS

VOCAB = ["the", "cat", "sat", "on", "mat", "not", "is", "dog", "ran", "home", "a"]


def make_release(root, dev=None, test=None, vocab_name="lambada_vocabulary_sorted.txt"):
    root.mkdir(parents=True, exist_ok=True)
    (root / vocab_name).write_text("\n".join(VOCAB) + "\n")
    novels = root / "train-novels" / "Adventure"
    novels.mkdir(parents=True)
    (novels / "b1.txt").write_text("the cat sat\non the mat .\n")
    (root / "train-novels" / "Romance").mkdir()
    (root / "train-novels" / "Romance" / "b2.txt").write_text("the dog ran home\n")
    (root / "lambada_development_plain_text.txt").write_text(
        dev if dev is not None else "the cat sat on the mat\nthe dog is n't home , the dog ran\n")
    (root / "lambada_test_plain_text.txt").write_text(test if test is not None else "a dog's cat sat on a dog\n")
    return root


def test_passages_exclude_the_target(tmp_path):
    data = load_lambada(make_release(tmp_path / "lambada"))
    d = data.dictionary
    assert len(d) == len(VOCAB) + 1 and d[len(VOCAB)] == EOS
    p0 = data.valid[0]
    assert isinstance(p0, LambadaPassage)
    assert d.decode(p0.context, sep=" ") == "the cat sat on the"
    assert p0.target == d.index("mat")
    # The model must not see the target: the context ends with the word before it.
    assert p0.context[-1].item() == d.index("the")
    # Reference remapping: n't -> not; punctuation-only tokens are dropped.
    assert d.decode(data.valid[1].context, sep=" ") == "the dog is not home the dog"
    assert data.valid[1].target == d.index("ran")
    # "dog's" is stripped of punctuation to "dogs" (unknown) and dropped.
    assert d.decode(data.test[0].context, sep=" ") == "a cat sat on a"
    assert data.test[0].target == d.index("dog")
    assert data.skipped == {"valid": 0, "test": 0}


def test_training_stream(tmp_path):
    data = load_lambada(make_release(tmp_path / "lambada"))
    text = data.dictionary.decode(data.train, sep=" ")
    # novels sorted by path; one <eos> per line; "." dropped (not in the vocabulary)
    assert text == "the cat sat <eos> on the mat <eos> the dog ran home <eos>"
    assert data.train.dtype == torch.int64
    one = load_lambada(tmp_path / "lambada", max_train_files=1)
    assert one.train.numel() == 8


def test_root_in_subfolder_and_vocab_variants(tmp_path):
    make_release(tmp_path / "lambada" / "lambada-dataset", vocab_name="lambada-vocab-2.txt")
    data = load_lambada(tmp_path / "lambada")
    assert len(data.valid) == 2
    assert load_lambada(data_dir=tmp_path).test[0].target == data.test[0].target


def test_vocabulary_with_a_byte_order_mark(tmp_path):
    """A vocabulary saved as "UTF-8 with BOM": its first word is still "the", not "\\ufeffthe"
    (every "the" of the novels and passages would silently drop out)."""
    root = make_release(tmp_path / "lambada")
    vocab = root / "lambada_vocabulary_sorted.txt"
    vocab.write_bytes(b"\xef\xbb\xbf" + vocab.read_bytes())
    data = load_lambada(root)
    assert data.dictionary[0] == "the"
    assert data.dictionary.decode(data.train, sep=" ").startswith("the cat sat <eos>")


def test_found_in_any_default_data_folder(tmp_path, monkeypatch):
    """Without data_dir, LAMBADA is looked for in every default data folder, like the other
    data sets (not only in the first folder that exists); the message lists them all."""
    project = tmp_path / "proj"
    (project / "data").mkdir(parents=True)  # an unrelated ./data comes first
    make_release(tmp_path / "shared" / "data" / "lambada")
    monkeypatch.chdir(project)
    monkeypatch.delenv("TORCHTCN_DATA", raising=False)
    assert len(load_lambada().valid) == 2
    with pytest.raises(FileNotFoundError) as err:
        load_lambada(data_dir=project / "data")
    assert str(project / "data" / "lambada") in str(err.value) and "TORCHTCN_DATA" in str(err.value)


def test_oov_target(tmp_path):
    root = make_release(tmp_path / "l", dev="the cat sat on the zebra\nthe cat sat\n")
    with pytest.raises(ValueError, match=r"lambada_development_plain_text.txt:1.*'zebra'"):
        load_lambada(root)
    data = load_lambada(root, on_oov_target="skip")
    assert len(data.valid) == 1 and data.skipped["valid"] == 1
    with pytest.raises(ValueError, match="on_oov_target"):
        load_lambada(root, on_oov_target="drop")


def test_missing_pieces(tmp_path):
    with pytest.raises(FileNotFoundError, match="lambada_development_plain_text"):
        load_lambada(tmp_path)
    root = make_release(tmp_path / "r")
    (root / "lambada_vocabulary_sorted.txt").unlink()
    with pytest.raises(FileNotFoundError, match="vocabulary"):
        load_lambada(root)
    with pytest.raises(ValueError, match="data_dir"):
        load_lambada(root, download=True)


def test_collate_left_pads_and_truncates():
    ps = [LambadaPassage(torch.tensor([5, 6, 7]), 8), LambadaPassage(torch.tensor([9]), 3)]
    x, y, n = collate_passages(ps, pad_id=0)
    assert x.tolist() == [[5, 6, 7], [0, 0, 9]] and y.tolist() == [8, 3] and n.tolist() == [3, 1]
    x, _, n = collate_passages(ps, pad_id=1, length=2)
    assert x.tolist() == [[6, 7], [1, 9]] and n.tolist() == [2, 1]
    with pytest.raises(ValueError):
        collate_passages([], 0)
    with pytest.raises(ValueError):
        collate_passages(ps, 0, length=0)


def test_last_position_predicts_target(tmp_path):
    """End to end: a causal 'model' that echoes its input shows which token is scored."""
    data = load_lambada(make_release(tmp_path / "lambada"))
    x, y, _ = collate_passages(data.valid, pad_id=data.pad_id)
    # The prediction for y comes from output[:, -1], computed from inputs up to x[:, -1],
    # which is the last context word, never the target itself.
    assert torch.equal(x[:, -1], torch.stack([p.context[-1] for p in data.valid]))
    assert data.pad_id == data.dictionary.index(EOS)
