import pytest
import torch

from torchtcn.data import adding_problem, copy_memory


def test_adding_shapes_and_semantics():
    x, y = adding_problem(64, 50, generator=0)
    assert x.shape == (64, 2, 50) and y.shape == (64, 1)
    assert x.dtype == y.dtype == torch.float32
    values, mask = x[:, 0], x[:, 1]
    assert ((values >= 0) & (values < 1)).all()
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert (mask.sum(-1) == 2).all()
    torch.testing.assert_close(y[:, 0], (values * mask).sum(-1))
    # halves: exactly one mark in each half
    assert (mask[:, :25].sum(-1) == 1).all() and (mask[:, 25:].sum(-1) == 1).all()


def test_adding_odd_length_and_minimum():
    x, _ = adding_problem(200, 7, generator=1)
    assert (x[:, 1, :3].sum(-1) == 1).all() and (x[:, 1, 3:].sum(-1) == 1).all()
    x, y = adding_problem(5, 2, generator=1)
    assert (x[:, 1] == 1).all()
    torch.testing.assert_close(y[:, 0], x[:, 0].sum(-1))


def test_adding_anywhere_placement():
    x, y = adding_problem(4000, 6, generator=2, placement="anywhere")
    mask = x[:, 1]
    assert (mask.sum(-1) == 2).all()  # two distinct positions
    torch.testing.assert_close(y[:, 0], (x[:, 0] * mask).sum(-1))
    # Uniform over the 15 unordered pairs: both marks sometimes fall in the same half.
    both_first_half = (mask[:, :3].sum(-1) == 2).float().mean().item()
    assert 0.12 < both_first_half < 0.28  # expected 3/15 = 0.2
    counts = mask.sum(0)
    assert (counts > 0.25 * 4000).all()  # every position used (expected 1/3 each)


def test_determinism_and_private_rng():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = adding_problem(8, 30, generator=5)
    b = adding_problem(8, 30, generator=torch.Generator().manual_seed(5))
    c = adding_problem(8, 30, generator=6)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a[0], c[0])
    g = torch.Generator().manual_seed(9)
    first, second = copy_memory(4, 20, generator=g), copy_memory(4, 20, generator=g)
    assert not torch.equal(first[0], second[0])  # a shared generator advances
    again = copy_memory(4, 20, generator=9)
    assert torch.equal(again[0], first[0]) and torch.equal(again[1], first[1])
    assert torch.equal(torch.get_rng_state(), state)


def test_copy_memory_layout():
    T, k = 30, 10
    x, y = copy_memory(16, T, generator=0)
    L = T + 2 * k
    assert x.shape == (16, 1, L) and x.dtype == torch.float32
    assert y.shape == (16, L) and y.dtype == torch.int64
    s = x[:, 0].long()
    digits = s[:, :k]
    assert ((digits >= 1) & (digits <= 8)).all()
    assert (s[:, k:k + T - 1] == 0).all()
    assert (s[:, k + T - 1:] == 9).all() and s[:, k + T - 1:].shape[1] == k + 1
    assert (y[:, :T + k] == 0).all()
    assert torch.equal(y[:, T + k:], digits)


def test_copy_memory_digit_range_covered():
    x, _ = copy_memory(500, 1, copy_len=10, generator=3)
    assert set(x[:, 0, :10].long().unique().tolist()) == set(range(1, 9))


def test_copy_memory_custom_copy_len():
    x, y = copy_memory(2, 5, copy_len=3, generator=0)
    assert x.shape == (2, 1, 11) and y.shape == (2, 11)
    assert x[0, 0].long().tolist()[3:] == [0, 0, 0, 0, 9, 9, 9, 9]


@pytest.mark.parametrize("call, exc", [
    (lambda: adding_problem(0, 10, generator=0), ValueError),
    (lambda: adding_problem(2, 1, generator=0), ValueError),
    (lambda: adding_problem(2, 10.0, generator=0), TypeError),
    (lambda: adding_problem(2, 10, generator=None), TypeError),
    (lambda: adding_problem(2, 10, generator=0, placement="middle"), ValueError),
    (lambda: copy_memory(2, 0, generator=0), ValueError),
    (lambda: copy_memory(2, 10, copy_len=0, generator=0), ValueError),
    (lambda: copy_memory(2, 10, generator="seed"), TypeError),
])
def test_bad_arguments(call, exc):
    with pytest.raises(exc):
        call()
