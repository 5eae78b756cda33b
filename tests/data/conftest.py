"""Fixtures for the data tests: no network, and the real data when it is present."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from torchtcn.data.paths import ENV_VAR, resolve_data_dir


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Every test runs offline: any attempt to open a network connection fails loudly."""

    def refuse(*args, **kwargs):
        # An OSError, like a real offline machine, so download code reports it per mirror.
        raise ConnectionRefusedError("network access attempted in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def _real_dir(sub: str, probe: str) -> Path | None:
    root = resolve_data_dir()
    return root if (root / sub / probe).is_file() else None


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The shared data directory (``../shared/data``); skips when it is absent."""
    root = resolve_data_dir()
    if not (root / "ptb" / "ptb.train.txt").is_file():
        pytest.skip(f"real benchmark data not found under {root} (set {ENV_VAR})")
    return root


@pytest.fixture(scope="session")
def real_mnist_dir() -> Path:
    root = _real_dir("mnist", "t10k-labels-idx1-ubyte.gz")
    if root is None:
        pytest.skip("real MNIST files not found")
    return root


@pytest.fixture(scope="session")
def real_music_dir() -> Path:
    root = _real_dir("music", "JSB_Chorales.mat")
    if root is None:
        pytest.skip("real piano-roll files not found")
    return root
