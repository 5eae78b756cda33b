"""The guarded weight norm: equal to torch's where torch's is finite, finite where it is not."""

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations

from torchtcn import TCN
from torchtcn.weight_norm import weight_norm


def _pair(seed=0):
    torch.manual_seed(seed)
    ours = weight_norm(nn.Conv1d(4, 6, 3).double())
    theirs = parametrizations.weight_norm(nn.Conv1d(4, 6, 3).double(), dim=0)
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


def test_state_dict_keys_and_shapes_match_torchs_weight_norm():
    ours, theirs = _pair()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in theirs.state_dict().items()}
    assert ours.parametrizations.weight.original0.shape == (6, 1, 1)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_forward_and_gradients_equal_torchs_to_rounding(dtype, tol):
    ours, theirs = _pair()
    ours, theirs = ours.to(dtype), theirs.to(dtype)
    x = torch.randn(2, 4, 11, dtype=dtype)
    out_ours, out_theirs = ours(x), theirs(x)
    torch.testing.assert_close(out_ours, out_theirs, rtol=tol, atol=tol)
    out_ours.square().sum().backward()
    out_theirs.square().sum().backward()
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=tol, atol=tol, msg=name)


def test_saves_no_copy_of_the_weight_for_backward():
    # what torch's weight_norm keeps (v, g, the norms), plus at most two per-channel float64
    # tensors (6 channels x 8 bytes): low_memory relies on it
    from torchtcn.bench.memory import saved_for_backward_bytes

    ours, theirs = _pair()
    assert saved_for_backward_bytes(lambda: ours.weight.sum()) <= saved_for_backward_bytes(
        lambda: theirs.weight.sum()) + 2 * 6 * 8


def test_init_keeps_the_weight():
    conv = nn.Conv1d(3, 5, 2)
    w = conv.weight.detach().clone()
    torch.testing.assert_close(weight_norm(conv).weight, w)


def test_a_vanished_direction_gives_a_zero_weight_not_nan():
    # what weight decay does to a dead channel: ||v||^2 underflows float32 (entries ~1e-22)
    conv = weight_norm(nn.Conv1d(4, 6, 3))
    v = conv.parametrizations.weight.original1
    with torch.no_grad():
        v[2].fill_(1e-22)
        v[3].zero_()
    w = conv.weight
    assert torch.isfinite(w).all()
    assert w[2].abs().max() < 1e-6 and (w[3] == 0).all()
    assert w[0].norm() > 0.01  # live channels untouched
    conv(torch.randn(2, 4, 9)).sum().backward()
    for name, p in conv.named_parameters():
        assert torch.isfinite(p.grad).all(), name


def test_tcn_trains_with_weight_decay_on_dead_channels_without_nan():
    torch.manual_seed(0)
    model = TCN(2, [8, 8], kernel_size=3)
    conv = model.blocks[0].unit1.conv
    with torch.no_grad():  # kill channels 0-3 of the first unit (negative bias, zero direction)
        conv.parametrizations.weight.original1[:4].mul_(1e-30)
        conv.bias[:4] = -1.0
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-1)
    x, y = torch.randn(4, 2, 20), torch.randn(4, 8, 20)
    for _ in range(20):
        opt.zero_grad()
        loss = (model(x) - y).square().mean()
        loss.backward()
        opt.step()
        assert torch.isfinite(loss), "weight norm produced a non-finite loss"
    assert all(torch.isfinite(p).all() for p in model.parameters())
