"""torch.hub entry points for RescaleNet (NeurIPS 2020: residual networks without normalization).

    model = torch.hub.load('/path/to/this/repo', 'rescalenet50', source='local', num_classes=10)
    model = torch.hub.load('/path/to/this/repo', 'rescalenet50', source='local', checkpoint='ckpt.pth')

Every builder takes the keyword arguments of :class:`rescalenet.RescaleNet`
(``num_classes``, ``drop_conv``, ``drop_fc``, ``multiplier``, ``out_indices`` ...), plus
``checkpoint``: a local file holding a ``state_dict`` (or a dict with one under
``'state_dict'`` or ``'model'``), loaded strictly with its AddBias calibration buffers.
No weights are published, so ``pretrained=True`` is refused.
"""
dependencies = ["torch"]

from typing import Any as _Any, Optional as _Optional  # noqa: E402  (private: hub lists public callables)

import torch as _torch  # noqa: E402

import rescalenet as _rescalenet  # noqa: E402


def _load(name: str, pretrained: bool, checkpoint: _Optional[str], kwargs: _Any):
    if pretrained:
        raise ValueError(
            "RescaleNet publishes no pretrained weights; train one (see the README) and pass "
            "checkpoint='path/to/state_dict.pth'"
        )
    model = _rescalenet.create_model(name, **kwargs)
    if checkpoint is not None:
        state = _torch.load(checkpoint, map_location="cpu", weights_only=True)
        if isinstance(state, dict):
            for key in ("state_dict", "model"):
                if isinstance(state.get(key), dict):
                    state = state[key]
                    break
        state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
        model.load_state_dict(state)
    return model


def rescalenet18(pretrained: bool = False, checkpoint: _Optional[str] = None, **kwargs: _Any):
    """RescaleNet-18 (basic blocks 2-2-2-2)."""
    return _load("rescalenet18", pretrained, checkpoint, kwargs)


def rescalenet34(pretrained: bool = False, checkpoint: _Optional[str] = None, **kwargs: _Any):
    """RescaleNet-34 (basic blocks 3-4-6-3)."""
    return _load("rescalenet34", pretrained, checkpoint, kwargs)


def rescalenet50(pretrained: bool = False, checkpoint: _Optional[str] = None, **kwargs: _Any):
    """RescaleNet-50 (bottlenecks 3-4-6-3)."""
    return _load("rescalenet50", pretrained, checkpoint, kwargs)


def rescalenet101(pretrained: bool = False, checkpoint: _Optional[str] = None, **kwargs: _Any):
    """RescaleNet-101 (bottlenecks 3-4-23-3)."""
    return _load("rescalenet101", pretrained, checkpoint, kwargs)


def rescalenet152(pretrained: bool = False, checkpoint: _Optional[str] = None, **kwargs: _Any):
    """RescaleNet-152 (bottlenecks 3-8-36-3)."""
    return _load("rescalenet152", pretrained, checkpoint, kwargs)


def rescalenet200(pretrained: bool = False, checkpoint: _Optional[str] = None, **kwargs: _Any):
    """RescaleNet-200 (bottlenecks 3-24-36-3, the official rescale200)."""
    return _load("rescalenet200", pretrained, checkpoint, kwargs)


def rescalenext50_32x4d(pretrained: bool = False, checkpoint: _Optional[str] = None, **kwargs: _Any):
    """RescaleNeXt-50 32x4d."""
    return _load("rescalenext50_32x4d", pretrained, checkpoint, kwargs)


def rescalenext101_32x8d(pretrained: bool = False, checkpoint: _Optional[str] = None, **kwargs: _Any):
    """RescaleNeXt-101 32x8d."""
    return _load("rescalenext101_32x8d", pretrained, checkpoint, kwargs)
