import pytest

from torchtcn import receptive_field as rf


def test_paper_seq_mnist_receptive_field():
    assert rf.receptive_field(7, rf.default_dilations(8)) == 3061


@pytest.mark.parametrize("k,dilations", [(2, [1, 2, 4]), (3, [1, 1, 3]), (1, [1, 2]), (5, [7])])
def test_formula_and_cumulative(k, dilations):
    expected = 1 + 2 * (k - 1) * sum(dilations)
    assert rf.receptive_field(k, dilations) == expected
    assert rf.receptive_fields_per_block(k, dilations)[-1] == expected


@pytest.mark.parametrize("k", range(1, 8))
@pytest.mark.parametrize("d", [1, 2, 3, 8])
def test_padding_keeps_length_and_lookahead_bounded(k, d):
    left, right = rf.conv_padding(k, d, causal=True)
    assert (left, right) == ((k - 1) * d, 0)
    left, right = rf.conv_padding(k, d, causal=False)
    assert left + right == (k - 1) * d and 0 <= left - right <= 1
    total = rf.receptive_field(k, [d, d])
    assert rf.lookahead(k, [d, d], causal=False) <= (total - 1) // 2
    assert rf.history(k, [d, d], True) == total - 1


@pytest.mark.parametrize("target", [1, 2, 13, 100, 3061, 3062, 10_000])
@pytest.mark.parametrize("k", [2, 3, 7])
def test_planner_returns_fewest_blocks(target, k):
    n = rf.blocks_for_history(target, k)
    assert rf.receptive_field(k, rf.default_dilations(n)) >= target
    if n > 1:
        assert rf.receptive_field(k, rf.default_dilations(n - 1)) < target
    assert rf.plan_dilations(target, k) == rf.default_dilations(n)


def test_planner_other_base_and_errors():
    n = rf.blocks_for_history(1000, 3, base=3)
    assert rf.receptive_field(3, rf.default_dilations(n, 3)) >= 1000
    assert rf.receptive_field(3, rf.default_dilations(n - 1, 3)) < 1000
    with pytest.raises(ValueError, match="kernel_size=1"):
        rf.blocks_for_history(10, 1)
    with pytest.raises(ValueError, match="target"):
        rf.blocks_for_history(0, 3)
    with pytest.raises(TypeError, match="kernel_size"):
        rf.blocks_for_history(10, 2.5)


@pytest.mark.parametrize("fn", [rf.receptive_field, rf.receptive_fields_per_block, rf.blind_spots,
                                lambda k, d: rf.lookahead(k, d, causal=False),
                                lambda k, d: rf.history(k, d, causal=True)])
def test_stack_functions_refuse_meaningless_stacks(fn):
    for k, dilations, error, match in [(0, [1, 2], ValueError, "kernel_size must be >= 1, got 0"),
                                       (3, [1, 0], ValueError, r"dilations\[1\] must be >= 1, got 0"),
                                       (3, [1, 2.0], TypeError, r"dilations\[1\] must be an int"),
                                       (True, [1], TypeError, "kernel_size must be an int"),
                                       (3, 4, TypeError, "dilations must be a sequence of ints")]:
        with pytest.raises(error, match=match):
            fn(k, dilations)
    with pytest.raises(ValueError, match="dilation must be >= 1"):
        rf.conv_padding(3, 0, causal=True)


# -- blind spots -------------------------------------------------------------------------------
def test_blind_spots_of_a_dilation_that_outgrows_the_blocks_below():
    # kernel 2, two convs per block: block 1 sees lags {0, 1, 2}, block 2 adds {0, 4, 8}
    assert rf.blind_spots(2, [1, 4]) == [3, 7]
    ahead = rf.lookahead(2, [1, 4], causal=False)  # 4: the same holes, seen from later
    assert ahead == 4 and rf.blind_spots(2, [1, 4], causal=False) == [3 - ahead, 7 - ahead]
    assert rf.describe_lags([3, 4, 5, 9, -2]) == "3..5, 9, -2"


@pytest.mark.parametrize("k", [1, 2, 3, 7])
@pytest.mark.parametrize("blocks", [1, 4, 9])
@pytest.mark.parametrize("base", [2, 3])
def test_power_dilations_within_reach_have_no_blind_spots(k, blocks, base):
    # a block spans 2 (k - 1) d, so base**i leaves no hole while base <= 2 (k - 1) + 1
    if k > 1 and base > 2 * (k - 1) + 1:
        assert rf.blind_spots(k, rf.default_dilations(blocks, base))
    else:
        assert rf.blind_spots(k, rf.default_dilations(blocks, base)) == []


@pytest.mark.parametrize(
    "k, dilations, causal",
    [(2, [1, 4], True), (2, [1, 4, 16], False), (3, [1, 7, 2], True), (2, [3, 1], True),
     (4, [1, 2, 4], True), (2, [2, 2], False),
     # odd (k - 1) * d, d > 1, non-causal: the residual path reaches lags no tap sum does
     (2, [2, 5], False), (2, [3, 7], False), (4, [3, 1, 9], False), (2, [5, 3], False)],
)
def test_blind_spots_are_the_holes_a_gradient_probe_finds(k, dilations, causal):
    import warnings

    import torch

    from torchtcn import TCN
    from torchtcn.diagnostics import dependence

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rf.ReceptiveFieldWarning)
        model = TCN(1, [3] * len(dilations), kernel_size=k, dilations=dilations, causal=causal,
                    activation="tanh", init_std=None)
    length = 3 * model.receptive_field
    t = length // 2
    seen = dependence(model, length, t)
    lags = t - torch.arange(length)
    window = (lags <= model.receptive_field - 1 - model.lookahead) & (lags >= -model.lookahead)
    assert sorted((lags[window & ~seen]).tolist()) == model.blind_spots
    assert not (seen & ~window).any()


def test_a_model_with_blind_spots_warns_once_built_and_can_be_silenced():
    import warnings

    import torchtcn

    with pytest.warns(torchtcn.ReceptiveFieldWarning, match=r"leaves 2 of the 11 .*lags 3, 7"):
        torchtcn.TCN(1, [4, 4], kernel_size=2, dilations=[1, 4])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torchtcn.TCN(1, [4] * 6, kernel_size=2)  # 2**i: no holes, no warning
        warnings.simplefilter("ignore", torchtcn.ReceptiveFieldWarning)
        torchtcn.TCN(1, [4, 4], kernel_size=2, dilations=[1, 4])


def test_blind_spots_of_deep_stacks_answer_at_once():
    # 60 doubling blocks: a receptive field of 2**61 steps, no bitset of that size is built
    assert rf.blind_spots(2, rf.default_dilations(60)) == []
    assert rf.blind_spots(3, [1, 2, 4] * 20) == []
    assert rf.blind_spots(2, [1, 4] + [8] * 30)[:2] == [3, 7]  # holes still found


def test_convs_per_block_is_checked_everywhere():
    for call in (lambda: rf.blocks_for_history(5, 3, convs_per_block=0),
                 lambda: rf.plan_dilations(5, 3, convs_per_block=-1)):
        with pytest.raises(ValueError, match="convs_per_block must be >= 1"):
            call()
    with pytest.raises(TypeError, match="convs_per_block must be an int"):
        rf.blocks_for_history(5, 3, convs_per_block=2.5)
