"""Recurrent baselines' own options (the shared contract is in test_registry_models.py)."""

from __future__ import annotations

import pytest
import torch

import torchtcn


def test_forget_bias_shifts_only_the_lstm_forget_gates():
    torch.manual_seed(0)
    plain = torchtcn.LSTM(3, hidden_size=5, num_layers=2)
    torch.manual_seed(0)
    biased = torchtcn.LSTM(3, hidden_size=5, num_layers=2, forget_bias=1.0)
    for k in range(2):
        shift = getattr(biased.rnn, f"bias_ih_l{k}") - getattr(plain.rnn, f"bias_ih_l{k}")
        expected = torch.zeros(20)
        expected[5:10] = 1.0  # gates (input, forget, cell, output), 5 units each
        torch.testing.assert_close(shift, expected, rtol=0, atol=1e-6)
        assert torch.equal(getattr(biased.rnn, f"bias_hh_l{k}"), getattr(plain.rnn, f"bias_hh_l{k}"))
    assert biased.config.forget_bias == 1.0


def test_forget_bias_survives_save_and_load(tmp_path):
    model = torchtcn.LSTM(2, hidden_size=4, forget_bias=1.0)
    torchtcn.save(model, tmp_path / "m.safetensors")
    loaded = torchtcn.load(tmp_path / "m.safetensors")
    assert loaded.config.forget_bias == 1.0
    assert torch.equal(loaded.rnn.bias_ih_l0, model.rnn.bias_ih_l0)  # not shifted twice


@pytest.mark.parametrize("cls", [torchtcn.GRU, torchtcn.RNN])
def test_forget_bias_needs_an_lstm(cls):
    with pytest.raises(ValueError, match="forget_bias applies to an LSTM"):
        cls(2, hidden_size=4, forget_bias=1.0)


@pytest.mark.parametrize("model", ["gru", "rnn"])
def test_a_task_does_not_offer_forget_bias_to_a_gru_or_rnn(model):
    from torchtcn.tasks import get_task

    task = get_task("jsb")
    assert "forget_bias" not in task.model_keys(model) and "forget_bias" in task.model_keys("lstm")
    with pytest.raises(ValueError, match="unknown setting 'forget_bias'"):
        task.resolve(model, {"forget_bias": "1.0"})


def test_forget_bias_type_is_checked():
    with pytest.raises(TypeError, match="forget_bias must be a float"):
        torchtcn.LSTM(2, forget_bias="1")


@pytest.mark.parametrize("cls", [torchtcn.LSTM, torchtcn.GRU, torchtcn.RNN])
def test_an_input_of_another_dtype_is_named_as_for_the_tcn(cls):
    model = cls(2, 4).double()
    with pytest.raises(ValueError, match=f"{cls.__name__} input dtype must be the model's: "
                                         "expected torch.float64, found torch.float32"):
        model(torch.randn(1, 2, 5))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast mixes dtypes on purpose
        cls(2, 4)(torch.randn(1, 2, 5))
