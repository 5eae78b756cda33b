import pytest
import torch

import torchtcn
from torchtcn.diagnostics import check_causality, measure_receptive_field


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(kernel_size=3),
        dict(kernel_size=2, dilations=[1, 4, 2]),
        dict(kernel_size=4, causal=False),
        dict(kernel_size=5, causal=False, norm="layer", layout="NLC"),
        dict(kernel_size=1),
    ],
)
def test_measured_receptive_field_equals_analytic(kwargs):
    model = torchtcn.TCN(2, [6] * 3, activation="gelu", **kwargs)
    assert measure_receptive_field(model) == (model.receptive_field, model.lookahead)


def test_relu_model_measured_too():
    model = torchtcn.TCN(1, [25] * 4, kernel_size=7)
    assert measure_receptive_field(model) == (model.receptive_field, 0)


def test_causality_checker():
    assert check_causality(torchtcn.TCN(2, [4, 4], kernel_size=3))
    assert not check_causality(torchtcn.TCN(2, [4, 4], kernel_size=3, causal=False))
    with pytest.raises(ValueError, match="not causal"):
        leaky = torchtcn.TCN(2, [4], kernel_size=3, causal=False, activation="tanh")
        check_causality(leaky, raise_on_leak=True)


def test_causality_checker_sees_batch_norm_training_leak():
    model = torchtcn.TCN(2, [4, 4], kernel_size=3, norm="batch")
    assert check_causality(model, train=False)
    assert not check_causality(model, train=True)
    assert check_causality(torchtcn.TCN(2, [4, 4], norm="layer", dropout=0.3), train=True)


def test_caller_model_untouched():
    model = torchtcn.TCN(2, [4], kernel_size=3).train()
    check_causality(model)
    assert model.training and next(model.parameters()).dtype == torch.float32


def test_recurrent_baseline_is_causal():
    assert check_causality(torchtcn.LSTM(2, 5))
