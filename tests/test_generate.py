"""Autoregressive generation (``torchtcn.generate``) through the streaming state."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import torchtcn
from torchtcn import TCN, LanguageModel, SequenceModel, generate


def language_model(vocab: int = 13) -> LanguageModel:
    torch.manual_seed(0)
    lm = LanguageModel(TCN(8, [12, 8], kernel_size=3, init_std=None), vocab_size=vocab)
    with torch.no_grad():
        lm.embedding.weight.normal_(0, 1.0)  # peaked logits, so greedy choices are clear-cut
    return lm.double().eval()


def test_greedy_equals_recomputing_the_whole_prefix():
    lm = language_model()
    prompt = torch.randint(0, 13, (3, 4))
    out = generate(lm, prompt, steps=12)
    assert out.shape == (3, 16) and torch.equal(out[:, :4], prompt)
    seq = prompt
    for _ in range(12):  # the slow way: full forward over everything so far
        nxt = lm(seq)[:, :, -1].argmax(1, keepdim=True)
        seq = torch.cat([seq, nxt], 1)
    assert torch.equal(out, seq)


def test_multinomial_is_seeded_by_the_generator():
    lm = language_model()
    prompt = torch.randint(0, 13, (2, 3))
    a = generate(lm, prompt, 20, sample="multinomial", temperature=2.0,
                 generator=torch.Generator().manual_seed(7))
    b = generate(lm, prompt, 20, sample="multinomial", temperature=2.0,
                 generator=torch.Generator().manual_seed(7))
    c = generate(lm, prompt, 20, sample="multinomial", temperature=2.0,
                 generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() < 13


def test_multinomial_at_low_temperature_is_greedy():
    lm = language_model()
    prompt = torch.randint(0, 13, (2, 3))
    cold = generate(lm, prompt, 10, sample="multinomial", temperature=1e-4,
                    generator=torch.Generator().manual_seed(0))
    assert torch.equal(cold, generate(lm, prompt, 10))


def test_callable_sampler():
    lm = language_model()
    out = generate(lm, torch.zeros(2, 1, dtype=torch.long), 5,
                   sample=lambda logits: torch.full((logits.shape[0],), 3))
    assert torch.equal(out[:, 1:], torch.full((2, 5), 3))


@pytest.mark.parametrize("layout", ["NCL", "NLC"])
def test_regression_feeds_outputs_back(layout):
    torch.manual_seed(1)
    model = TCN(2, [6, 2], kernel_size=3, layout=layout, activation="tanh",
                residual_activation=False).double().eval()
    prompt = torch.randn(2, 2, 5, dtype=torch.float64)
    if layout == "NLC":
        prompt = prompt.transpose(1, 2)
    out = generate(model, prompt, steps=8)
    seq = prompt
    t_dim = 2 if layout == "NCL" else 1
    for _ in range(8):
        nxt = model(seq).narrow(t_dim, seq.shape[t_dim] - 1, 1)
        seq = torch.cat([seq, nxt], t_dim)
    torch.testing.assert_close(out, seq, rtol=0, atol=1e-10)


def test_per_step_head_regression_with_a_callable():
    torch.manual_seed(2)
    body = TCN(3, [5, 5], kernel_size=2)
    model = SequenceModel(body, head="per_step", out_features=3).double().eval()
    prompt = torch.randn(1, 3, 4, dtype=torch.float64)
    out = generate(model, prompt, 6, sample=lambda y: y.clamp(-0.1, 0.1))
    assert out.shape == (1, 3, 10)
    assert out[:, :, 4:].abs().max() <= 0.1
    torch.testing.assert_close(out[:, :, 4], model(prompt)[:, :, -1].clamp(-0.1, 0.1))


def test_errors():
    lm = language_model()
    with pytest.raises(ValueError, match="steps"):
        generate(lm, torch.zeros(1, 2, dtype=torch.long), -1)
    with pytest.raises(ValueError, match="sample"):
        generate(lm, torch.zeros(1, 2, dtype=torch.long), 2, sample="beam")
    with pytest.raises(ValueError, match="temperature"):
        generate(lm, torch.zeros(1, 2, dtype=torch.long), 2, temperature=0)
    with pytest.raises(ValueError, match="causal"):
        generate(TCN(2, [2], kernel_size=3, causal=False).eval(), torch.randn(1, 2, 3), 2)
    with pytest.raises(ValueError, match="in_channels"):
        generate(TCN(2, [3]).eval(), torch.randn(1, 2, 3), 2)
    with pytest.raises(ValueError, match="language model"):
        generate(TCN(2, [2]).eval(), torch.randn(1, 2, 3), 2, sample="multinomial")
    with pytest.raises(ValueError, match="temperature must be a finite number"):
        generate(lm, torch.zeros(1, 2, dtype=torch.long), 2, temperature=float("nan"))
    with pytest.raises(TypeError, match="streams .* got Linear"):
        generate(torch.nn.Linear(2, 2), torch.randn(1, 2, 3), 2)
    lstm = torchtcn.LSTM(2, 2).eval()
    with pytest.raises(ValueError, match="cond was given, but this LSTM is not conditioned"):
        generate(lstm, torch.randn(1, 2, 3), 2, cond=torch.randn(1, 4))
    assert generate(lstm, torch.randn(1, 2, 3), np.int64(2)).shape == (1, 2, 5)
    for bad in (lambda logits: logits.argmax(1)[:1],  # one token for two streams
                lambda logits: logits.argmax(1).float(),  # not token ids
                lambda logits: logits):  # logits, not tokens
        with pytest.raises(ValueError, match=r"sampler callable must map .* \(2,\) integer"):
            generate(lm, torch.zeros(2, 2, dtype=torch.long), 2, sample=bad)
    # the last token is never fed back, so its range is checked where it is picked
    with pytest.raises(ValueError, match=r"tokens in \[0, 13\) \(vocab_size\), found min 999"):
        generate(lm, torch.zeros(2, 2, dtype=torch.long), 1,
                 sample=lambda logits: torch.full((2,), 999))
    with pytest.raises(TypeError, match=r"\(N, C\) tensor, found list"):
        generate(TCN(2, [2]).eval(), torch.randn(1, 2, 3), 2, sample=lambda y: y.tolist())
    with pytest.raises(ValueError, match="too small.*greedy"):
        generate(lm, torch.zeros(1, 2, dtype=torch.long), 2, sample="multinomial",
                 temperature=1e-320)
    assert torchtcn.generate is generate


def test_a_tiny_temperature_samples_the_argmax():
    # 1e-40 overflowed float32 logits / temperature to inf (torch then refused the probabilities)
    lm = language_model()
    prompt = torch.tensor([[1, 2], [3, 4]])
    cold = generate(lm, prompt, 4, sample="multinomial", temperature=1e-40,
                    generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(cold, generate(lm, prompt, 4), rtol=0, atol=0)
