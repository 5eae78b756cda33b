"""Monte Carlo dropout: only dropout samples, modes come back, the statistics are right."""

from __future__ import annotations

import pytest
import torch

import torchtcn
from torchtcn.uncertainty import mc_dropout, mc_predict


def test_only_dropout_samples_and_batch_norm_stays_in_eval_mode():
    model = torchtcn.TCN(2, [6, 6], kernel_size=3, dropout=0.3, norm="batch").double()
    model.train()
    for m in model.modules():  # non-trivial running statistics, so using batch stats would show
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    x = torch.randn(3, 2, 12, dtype=torch.float64)
    with mc_dropout(model):
        assert not model.training and not model.blocks[0].unit1.norm.training
        a, b = model(x), model(x)
    assert not torch.equal(a, b), "dropout did not sample"
    for k, v in model.state_dict().items():
        if k in stats:
            assert torch.equal(v, stats[k]), f"{k} changed: batch norm was in training mode"
    assert all(m.training for m in model.modules()), "modes were not restored"


def test_modes_are_restored_after_an_error():
    model = torchtcn.TCN(1, [4], dropout=0.2).eval()
    with pytest.raises(RuntimeError, match="boom"), mc_dropout(model):
        raise RuntimeError("boom")
    assert not any(m.training for m in model.modules())


def test_mc_predict_matches_the_samples_it_draws():
    model = torchtcn.SequenceModel(torchtcn.TCN(1, [5, 5], kernel_size=2, dropout=0.4), "mean", 2).double()
    x = torch.randn(4, 1, 9, dtype=torch.float64)
    torch.manual_seed(0)
    mean, std = mc_predict(model, x, samples=7)
    torch.manual_seed(0)
    with torch.no_grad(), mc_dropout(model):
        draws = torch.stack([model(x) for _ in range(7)])
    torch.testing.assert_close(mean, draws.mean(0), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(std, draws.std(0), rtol=1e-10, atol=1e-12)
    assert bool((std > 0).all())


def test_mc_predict_passes_keyword_arguments_and_is_exact_without_dropout():
    model = torchtcn.SequenceModel(torchtcn.TCN(1, [5], kernel_size=3, dropout=0.0), "last_step", 1)  # RF 5
    x, lengths = torch.randn(2, 1, 5), torch.tensor([5, 3])
    mean, std = mc_predict(model, x, samples=3, lengths=lengths)
    torch.testing.assert_close(mean, model.eval()(x, lengths=lengths))
    assert torch.equal(std, torch.zeros_like(std))


def test_recurrent_dropout_between_layers_samples_too():
    model = torchtcn.LSTM(2, 6, num_layers=2, dropout=0.5).eval()
    x = torch.randn(2, 2, 5)
    with torch.no_grad(), mc_dropout(model):
        assert not torch.equal(model(x), model(x))


@pytest.mark.parametrize("samples", [1, 0, 2.5, True])
def test_bad_sample_counts_are_named(samples):
    with pytest.raises(ValueError, match="samples must be an int >= 2"):
        mc_predict(torchtcn.TCN(1, [4]), torch.randn(1, 1, 4), samples=samples)


def test_not_a_module():
    with pytest.raises(TypeError, match="needs an nn.Module, got function"), mc_dropout(lambda x: x):
        pass


def test_attention_dropout_samples_too():
    # nn.MultiheadAttention's dropout is functional, keyed on its own training flag
    class Attend(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.attention = torch.nn.MultiheadAttention(8, 2, dropout=0.5, batch_first=True)

        def forward(self, x):
            return self.attention(x, x, x, need_weights=False)[0]

    model = Attend().eval()
    _, std = mc_predict(model, torch.randn(2, 5, 8), samples=4)
    assert std.max() > 0 and not model.training and not model.attention.training


def test_transformer_layers_sample_their_dropout():
    # in eval mode torch runs them through a fused fast path that applies no dropout
    layer = torch.nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.5,
                                             batch_first=True)
    model = torch.nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False).eval()
    _, std = mc_predict(model, torch.randn(2, 5, 8), samples=4)
    assert std.max() > 0 and not model.training
