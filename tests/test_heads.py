import warnings

import numpy as np
import pytest
import torch

import torchtcn


def test_last_step_and_per_step_shapes():
    body = torchtcn.TCN(2, [8, 8], kernel_size=3)
    clf = torchtcn.SequenceModel(body, head="last_step", out_features=5)
    assert clf(torch.randn(4, 2, 10)).shape == (4, 5)
    reg = torchtcn.SequenceModel(torchtcn.LSTM(2, 7), head="per_step", out_features=3)
    assert reg(torch.randn(4, 2, 10)).shape == (4, 3, 10)


def test_last_step_head_reads_only_the_last_step():
    head = torchtcn.LastStepHead(3, 2)
    h = torch.randn(1, 3, 6)
    h2 = h.clone()
    h2[:, :, :-1] = 0
    assert torch.equal(head(h), head(h2))


def test_nlc_body_with_head():
    body = torchtcn.TCN(2, [8], kernel_size=3, layout="NLC")
    model = torchtcn.SequenceModel(body, head="per_step", out_features=4)
    assert model(torch.randn(3, 10, 2)).shape == (3, 4, 10)


def test_receptive_field_warning_is_visible_and_silenceable():
    body = torchtcn.TCN(1, [4, 4], kernel_size=2)  # receptive field 7
    model = torchtcn.SequenceModel(body, out_features=1)
    with pytest.warns(torchtcn.ReceptiveFieldWarning, match="longer than the receptive field"):
        model(torch.randn(1, 1, 8))
    quiet = torchtcn.SequenceModel(torchtcn.TCN(1, [4, 4], kernel_size=2), out_features=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", category=torchtcn.ReceptiveFieldWarning)
        quiet(torch.randn(1, 1, 8))
    covered = torchtcn.SequenceModel(torchtcn.TCN(1, [4, 4], kernel_size=2), out_features=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        covered(torch.randn(1, 1, 7))  # exactly the receptive field: no warning


def test_non_causal_last_step_warning_counts_only_the_history():
    # RF 13 with lookahead 6: the last step sees 7 steps, itself and 6 before it
    model = torchtcn.SequenceModel(torchtcn.TCN(1, [8, 8], kernel_size=3, causal=False),
                                   "last_step", 1)
    with pytest.warns(torchtcn.ReceptiveFieldWarning, match=r"history \(7 of .* 13 .*first 1 ") as w:
        model(torch.randn(1, 1, 8))
    assert w[0].filename == __file__  # the user's line, not one inside torch
    assert torchtcn.measure_receptive_field(model.body) == (13, 6)


def test_per_step_head_never_warns():
    model = torchtcn.SequenceModel(torchtcn.TCN(1, [4], kernel_size=2), "per_step", 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model(torch.randn(1, 1, 100))


def test_language_model_tied_and_untied(tmp_path):
    lm = torchtcn.LanguageModel(torchtcn.TCN(16, [32, 16], kernel_size=3), vocab_size=50)
    assert lm.decoder.weight is lm.embedding.weight
    tokens = torch.randint(0, 50, (2, 12))
    logits = lm(tokens)
    assert logits.shape == (2, 50, 12)
    torch.nn.functional.cross_entropy(logits, tokens).backward()
    assert lm.embedding.weight.grad is not None
    untied = torchtcn.LanguageModel(
        torchtcn.GRU(16, 24), vocab_size=50, tie_weights=False, embed_dropout=0.1
    )
    assert untied.decoder.weight is not untied.embedding.weight
    assert untied(tokens).shape == (2, 50, 12)
    with pytest.raises(ValueError, match="tie_weights"):
        torchtcn.LanguageModel(torchtcn.TCN(16, [32], kernel_size=3), vocab_size=50)
    path = tmp_path / "lm.safetensors"
    torchtcn.save(lm, path)
    loaded = torchtcn.load(path)
    assert loaded.decoder.weight is loaded.embedding.weight
    lm.eval()
    assert torch.equal(lm(tokens), loaded(tokens))


def test_language_model_token_errors():
    lm = torchtcn.LanguageModel(torchtcn.TCN(8, [8], kernel_size=2), vocab_size=10)
    with pytest.raises(TypeError, match="int64"):
        lm(torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"2-D \(N, T\)"):
        lm(torch.randint(0, 10, (2, 5, 1)))
    with pytest.raises(ValueError, match=r"tokens must have T >= 1 steps, got shape \(2, 0\)"):
        lm(torch.zeros(2, 0, dtype=torch.long))  # not the embedded (2, 8, 0)
    with pytest.raises(ValueError, match=r"tokens must have T >= 1 steps, got shape \(2, 0\)"):
        lm.step(torch.zeros(2, 0, dtype=torch.long), lm.init_state(2))
    for bad, shown in ((10, "max 10"), (-1, "min -1")):
        tokens = torch.tensor([[1, 2, bad]])
        with pytest.raises(ValueError, match=rf"in \[0, 10\) \(vocab_size\), got .*{shown}"):
            lm(tokens)
        state = lm.init_state(batch_size=1)
        with pytest.raises(ValueError, match=r"in \[0, 10\)"):
            lm.step(tokens, state)  # the streaming path embeds through the same check


def test_language_model_refuses_a_conditioned_body():
    # forward, step and generate take no cond, so such a model could never run
    with pytest.raises(ValueError, match="takes no conditioning.*cond_channels=2"):
        torchtcn.LanguageModel(torchtcn.TCN(4, [4], cond_channels=2), vocab_size=7)


def test_head_config_errors():
    body = torchtcn.TCN(1, [4], kernel_size=2)
    with pytest.raises(ValueError, match="head must be one of"):
        torchtcn.SequenceModel(body, head="middle")
    with pytest.raises(ValueError, match="out_features"):
        torchtcn.SequenceModel(body, out_features=0)
    with pytest.raises(TypeError, match="registered torchtcn model"):
        torchtcn.SequenceModel(torch.nn.Conv1d(1, 4, 1))
    wrapped = torchtcn.SequenceModel(body, "last_step", 2)
    with pytest.raises(TypeError, match="the body must be a sequence model.*SequenceModel"):
        torchtcn.SequenceModel(wrapped, "mean", 2)  # was an AttributeError (out_channels)
    for cls in (torchtcn.SequenceModel, torchtcn.LanguageModel):  # was an AttributeError
        with pytest.raises(TypeError, match=f"expected a {cls.__name__}Config, got TCNConfig"):
            cls.from_config(body.config)


def test_heads_check_their_input():
    heads = torchtcn.LastStepHead, torchtcn.PerStepHead, torchtcn.MeanPoolHead
    for head in (cls(3, 2) for cls in heads):
        with pytest.raises(ValueError, match=r"input must be \(N, 3, T\).*got shape \(3, 5\)"):
            head(torch.randn(3, 5))
        with pytest.raises(ValueError, match=r"got shape \(1, 4, 5\)"):
            head(torch.randn(1, 4, 5))
        with pytest.raises(TypeError, match="must be a tensor"):
            head([[1.0]])
    for head in (torchtcn.LastStepHead(3, 2), torchtcn.MeanPoolHead(3, 2)):  # nothing to read
        with pytest.raises(ValueError, match="T >= 1"):
            head(torch.randn(1, 3, 0))
    assert torchtcn.PerStepHead(3, 2)(torch.randn(1, 3, 0)).shape == (1, 2, 0)
    for head in (cls(3, 2) for cls in heads):  # torch's "mat1 and mat2 must have the same dtype"
        for dtype in (torch.float64, torch.int64):
            with pytest.raises(TypeError, match=f"must be torch.float32.*got {dtype}"):
                head(torch.zeros(1, 3, 4, dtype=dtype))
        with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast casts for the linear map
            assert head(torch.zeros(1, 3, 4, dtype=torch.bfloat16)).dtype == torch.bfloat16
    with pytest.raises(TypeError, match="in_channels must be an int"):
        torchtcn.LastStepHead(True, 2)


def test_wrapper_configs_are_hashable_and_cannot_be_edited_behind_the_model(tmp_path):
    """The configs are frozen, but their body spec is a dict: an edit through model.config
    (or to the caller's dict) was accepted and saved a config that disagreed with the weights,
    which load then refused; hash() raised TypeError."""
    model = torchtcn.SequenceModel(torchtcn.TCN(1, [4], kernel_size=2), "last_step", 3)
    lm = torchtcn.LanguageModel(torchtcn.TCN(8, [8], kernel_size=2), vocab_size=10)
    for m in (model, lm):
        assert hash(m.config) == hash(m.config) and m.config == m.config
        m.config.body["config"]["channels"] = [9]
        torchtcn.save(m, tmp_path / "m.safetensors")
        assert torchtcn.load(tmp_path / "m.safetensors").config == m.config
    spec = {"name": "tcn", "config": dict(model.config.body["config"])}
    config = type(model.config)(spec, "mean", 2)
    spec["config"]["channels"] = [7]
    assert config.body["config"]["channels"] == [4]


def test_language_model_config_types():
    body = torchtcn.TCN(4, [4], kernel_size=2)
    for bad in (1, "no"):  # "no" is truthy: it would tie the weights
        with pytest.raises(TypeError, match="tie_weights must be a bool"):
            torchtcn.LanguageModel(body, 9, tie_weights=bad)
    with pytest.raises(TypeError, match="embed_dropout must be a float"):
        torchtcn.LanguageModel(body, 9, embed_dropout="a")
    assert torchtcn.LanguageModel(body, np.int64(9)).config.vocab_size == 9
    assert torchtcn.SequenceModel(body, "last_step", np.int64(2)).config.out_features == 2


@pytest.mark.parametrize("lengths, error, match", [
    (torch.tensor([3.0, 2.0]), TypeError, "integers, got dtype torch.float32"),
    (torch.tensor([True, True]), TypeError, "integers"),
    ("abc", TypeError, "1-D integer tensor or a list of ints, got str"),
    (torch.tensor([3, 2, 1]), ValueError, r"shape \(2,\) \(one per sequence\), got \(3,\)"),
    (torch.tensor([[3, 2]]), ValueError, r"shape \(2,\)"),
    (torch.tensor([6, 2]), ValueError, r"in 1\.\.5 \(the padded length\), got min 2, max 6"),
    (torch.tensor([0, 2]), ValueError, r"in 1\.\.5"),
])
def test_bad_lengths_are_named(lengths, error, match):
    model = torchtcn.SequenceModel(torchtcn.TCN(1, [4], kernel_size=2), out_features=1)
    with pytest.raises(error, match=match):
        model(torch.randn(2, 1, 5), lengths=lengths)


@pytest.mark.parametrize("head", ["last_step", "per_step", "mean"])
def test_an_empty_batch_with_lengths(head):
    """N = 0 works with lengths too (the last-step head's coverage check took a max of
    nothing)."""
    model = torchtcn.SequenceModel(torchtcn.TCN(1, [4], kernel_size=2), head, 3)
    out = model(torch.zeros(0, 1, 5), lengths=torch.zeros(0, dtype=torch.long))
    assert out.shape[:2] == (0, 3)


def test_lengths_as_a_list_and_the_coverage_warning_from_the_longest():
    model = torchtcn.SequenceModel(torchtcn.TCN(1, [4], kernel_size=2), out_features=1)  # RF 3
    with warnings.catch_warnings():
        warnings.simplefilter("error", torchtcn.ReceptiveFieldWarning)
        model(torch.randn(2, 1, 9), lengths=[3, 2])  # padded to 9, but no sequence exceeds 3
    with pytest.warns(torchtcn.ReceptiveFieldWarning, match="length 4"):
        model(torch.randn(2, 1, 9), lengths=[4, 2])


def test_lengths_refused_for_a_non_causal_body():
    model = torchtcn.SequenceModel(torchtcn.TCN(1, [4], kernel_size=3, causal=False), "per_step")
    with pytest.raises(ValueError, match="needs a causal body: this one sees 2 steps ahead"):
        model(torch.randn(2, 1, 5), lengths=[5, 3])


def test_wrappers_expose_the_bodys_receptive_field_facts():
    body = torchtcn.TCN(1, [4, 4], kernel_size=2, dilations=[1, 4], causal=False)
    for model in (torchtcn.SequenceModel(body, "per_step", 2),
                  torchtcn.LanguageModel(torchtcn.TCN(4, [4], kernel_size=3), 9)):
        b = model.body
        assert (model.receptive_field, model.lookahead, model.blind_spots) == (
            b.receptive_field, b.lookahead, b.blind_spots)
    lstm_lm = torchtcn.LanguageModel(torchtcn.LSTM(4, 4), 9)
    assert (lstm_lm.receptive_field, lstm_lm.lookahead, lstm_lm.blind_spots) == (None, 0, [])
