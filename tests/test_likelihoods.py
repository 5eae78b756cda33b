"""Probabilistic forecast outputs: losses, point forecasts, parameter layout, bad settings."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from torchtcn.likelihoods import MIN_STD, Likelihood, parse_quantiles


def test_point_kind_is_the_squared_error_of_the_output():
    raw, y = torch.randn(3, 4, 7, dtype=torch.float64), torch.randn(3, 4, 7, dtype=torch.float64)
    lik = Likelihood()
    assert lik.params == 1 and lik.quantiles == ()
    torch.testing.assert_close(lik.loss(raw, y), (raw - y).square())
    assert lik.point(raw) is raw


def test_gaussian_loss_is_the_full_negative_log_likelihood():
    torch.manual_seed(0)
    raw = torch.randn(3, 2 * 4, 7, dtype=torch.float64)  # 4 targets: means, then raw scales
    y = torch.randn(3, 4, 7, dtype=torch.float64)
    lik = Likelihood("gaussian")
    mean, std = raw[:, :4], F.softplus(raw[:, 4:]) + MIN_STD
    torch.testing.assert_close(lik.point(raw), mean)
    torch.testing.assert_close(lik.std(raw), std)
    expected = F.gaussian_nll_loss(mean, y, std.square(), full=True, eps=0.0, reduction="none")
    torch.testing.assert_close(lik.loss(raw, y), expected)
    # a standard normal forecast (raw scale: softplus^-1 of 1 - MIN_STD) scored at 0:
    # -log N(0; 0, 1) = log(2 pi) / 2
    unit_scale = torch.tensor(1.0 - MIN_STD, dtype=torch.float64).expm1().log()
    standard = torch.stack([torch.tensor(0.0, dtype=torch.float64), unit_scale]).view(1, 2, 1)
    assert lik.std(standard).item() == pytest.approx(1.0)
    assert lik.loss(standard, torch.zeros(1, 1, 1, dtype=torch.float64)).item() == \
        pytest.approx(0.91893853320467)


def test_quantile_loss_is_the_mean_pinball_loss_and_the_median_is_the_point():
    lik = Likelihood("quantile", "0.9,0.1")
    assert lik.quantiles == (0.1, 0.5, 0.9) and lik.params == 3  # the median is added
    raw = torch.tensor([[[1.0], [2.0], [3.0]]], dtype=torch.float64)  # one target, 3 levels
    y = torch.tensor([[[2.5]]], dtype=torch.float64)
    # pinball at y - q = 1.5, 0.5, -0.5: 0.1 * 1.5, 0.5 * 0.5, 0.1 * 0.5 (level 0.9 over)
    expected = (0.1 * 1.5 + 0.5 * 0.5 + (1 - 0.9) * 0.5) / 3
    assert lik.loss(raw, y).item() == pytest.approx(expected)
    assert lik.point(raw).item() == 2.0
    crossed = torch.tensor([[[3.0], [1.0], [2.0]]])  # crossing levels are sorted
    assert lik.point(crossed).item() == 2.0
    assert lik.quantile_forecasts(crossed)[0, :, 0, 0].tolist() == [1.0, 2.0, 3.0]


def test_quantile_loss_is_minimised_at_the_samples_quantiles():
    # the pinball loss of a constant forecast over samples is least at their own quantile
    gen = torch.Generator().manual_seed(0)
    y = torch.randn(1, 1, 5001, generator=gen, dtype=torch.float64)
    lik = Likelihood("quantile", (0.1, 0.5, 0.9))
    best = torch.quantile(y.flatten(), torch.tensor(lik.quantiles, dtype=torch.float64))

    def loss(levels):
        return lik.loss(levels.view(1, 3, 1).expand(-1, -1, y.shape[2]), y).mean().item()

    for shift in (-0.05, -0.01, 0.01, 0.05):
        for i in range(3):
            moved = best.clone()
            moved[i] += shift
            assert loss(moved) > loss(best)


def test_round_trip_and_bad_settings():
    for lik in (Likelihood(), Likelihood("gaussian"), Likelihood("quantile", (0.05, 0.95))):
        assert Likelihood.from_json(lik.to_json()) == lik
    assert Likelihood.from_json(None) == Likelihood()
    with pytest.raises(ValueError, match=r"likelihood must be one of \['none', 'gaussian', "
                                         r"'quantile'\], got 'poisson'"):
        Likelihood("poisson")
    with pytest.raises(ValueError, match=r"quantiles must be numbers in \(0, 1\), got '0.1,1.5'"):
        Likelihood("quantile", "0.1,1.5")
    with pytest.raises(ValueError, match="separated by commas, got '0.1;0.9'"):
        parse_quantiles("0.1;0.9")
    with pytest.raises(ValueError, match="distinct"):
        parse_quantiles("0.1,0.1")
    with pytest.raises(ValueError, match=r"needs 2 outputs per target, got 3 outputs on dim 1"):
        Likelihood("gaussian").point(torch.zeros(1, 3, 4))
    with pytest.raises(ValueError, match="a none forecast has no standard deviation"):
        Likelihood().std(torch.zeros(1, 1, 1))


@pytest.mark.parametrize("lik", [Likelihood(), Likelihood("gaussian"), Likelihood("quantile", (0.1, 0.9))],
                         ids=["none", "gaussian", "quantile"])
def test_targets_of_another_shape_are_refused_not_broadcast(lik):
    """(N, T) targets against (N, P, T) outputs broadcast to an (N, N, T) loss that scores
    every sequence against every other's targets: a ValueError names the shape expected."""
    raw = torch.randn(4, lik.params, 5)
    assert lik.loss(raw, torch.randn(4, 1, 5)).shape == (4, 1, 5)
    for y in (torch.randn(4, 5), torch.randn(4, 1, 6), torch.randn(1, 1, 5)):
        with pytest.raises(ValueError, match=r"targets must have the point forecast's shape \(4, 1, 5\)"):
            lik.loss(raw, y)
    with pytest.raises(ValueError, match="forecasts must be a tensor"):
        lik.loss(torch.randn(4), torch.randn(4))


def test_a_quantile_likelihood_without_levels_forecasts_the_median():
    assert Likelihood("quantile").quantiles == (0.5,)



def test_quantiles_given_as_none_one_number_or_another_type():
    assert Likelihood("quantile", None).quantiles == (0.5,)
    assert Likelihood("quantile", 0.9).quantiles == (0.5, 0.9)
    assert Likelihood("quantile", [0.9, 0.1]).quantiles == (0.1, 0.5, 0.9)
    with pytest.raises(TypeError, match=r"quantiles must be a str '0.1,0.9', numbers \(a list, "
                                        r"array, tensor\) or one number, got dict"):
        Likelihood("quantile", {"q": 0.9})


def test_quantiles_given_as_an_array_a_tensor_or_a_numpy_number():
    import numpy as np

    assert Likelihood("quantile", np.array([0.1, 0.9])).quantiles == (0.1, 0.5, 0.9)
    assert Likelihood("quantile", torch.tensor([0.25], dtype=torch.float64)).quantiles == (0.25, 0.5)
    assert Likelihood("quantile", np.float64(0.9)).quantiles == (0.5, 0.9)
    assert Likelihood("quantile", range(0)).quantiles == (0.5,)
    assert Likelihood("quantile", torch.tensor(0.25, dtype=torch.float64)).quantiles == (0.25, 0.5)
    assert Likelihood("quantile", np.array(0.25)).quantiles == (0.25, 0.5)
    with pytest.raises(TypeError, match="got bytes"):
        Likelihood("quantile", b"0.1")
