import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: end-to-end runs (minutes); `make test-slow` runs them")


@pytest.fixture(autouse=True)
def _fuse_at_every_size(monkeypatch):
    """The fused path also on the tests' small inputs, whose later stages are below the
    size where it pays (``rescalenet.fast.MIN_FUSED_POSITIONS``): every fused-vs-reference
    comparison then covers every block. ``test_train_fused.py`` tests the dispatch itself."""
    import rescalenet.fast

    monkeypatch.setattr(rescalenet.fast, "MIN_FUSED_POSITIONS", 0)


@pytest.fixture(autouse=True)
def _seed():
    import torch

    torch.manual_seed(0)
    yield


def _threads(n):
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one thread is faster, and far faster on a loaded shared CPU."""
    yield from _threads(1)


@pytest.fixture(scope="module")
def two_threads():
    yield from _threads(2)


def calibrate_on_noise(model, size=(32, 32), batch=2, channels=None, seed=None):
    """Calibrate ``model`` on 8 batches of Gaussian noise of shape
    ``(batch, channels, *size)`` (``channels``: the model's ``in_chans``; ``size`` may
    be ``(T, H, W)`` for a 3D network); returns the model."""
    import torch

    import rescalenet

    channels = channels or getattr(model, "in_chans", 3)
    gen = None if seed is None else torch.Generator().manual_seed(seed)
    rescalenet.calibrate(model, [torch.randn(batch, channels, *size, generator=gen) for _ in range(8)])
    return model


@pytest.fixture
def calibrate():
    """The shared calibrate helper (:func:`calibrate_on_noise`)."""
    return calibrate_on_noise
