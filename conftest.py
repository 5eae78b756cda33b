"""Root conftest: seeds torch before every test *and* every doctest in ``src/`` (a conftest
under ``tests/`` does not reach the doctests), so no result depends on test order."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
