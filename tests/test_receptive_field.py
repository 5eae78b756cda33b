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
