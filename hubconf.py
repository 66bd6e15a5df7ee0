"""torch.hub entry points for RescaleNet (NeurIPS 2020: residual networks without normalization).

    model = torch.hub.load('/path/to/this/repo', 'rescalenet50', source='local', num_classes=10)
    model = torch.hub.load('/path/to/this/repo', 'rescalenet50', source='local', checkpoint='ckpt.pth')
    torch.hub.list('/path/to/this/repo', source='local')  # every 2D RescaleNet of the registry

Every entry point is a 2D RescaleNet of the model registry (``rescalenet.list_models(kind='2d')``:
the ImageNet family and the CIFAR family) and takes the keyword arguments of
:class:`rescalenet.RescaleNet` (``num_classes``, ``drop_conv``, ``drop_fc``, ``multiplier``,
``out_indices`` ...), plus ``checkpoint``: a local file read by :mod:`rescalenet.checkpoint`
(a ``state_dict``, or a dict with one under ``'state_dict'``, ``'model'`` or ``'net'``;
``module.`` prefixes and the official code's names are handled), loaded strictly with its
AddBias calibration buffers. No weights are published, so ``pretrained=True`` is refused.
"""
dependencies = ["torch"]

from typing import Any as _Any, Callable as _Callable, Optional as _Optional  # noqa: E402

import rescalenet as _rescalenet  # noqa: E402


def _entry_point(name: str) -> _Callable:
    def load(pretrained: bool = False, checkpoint: _Optional[str] = None, **kwargs: _Any):
        if pretrained:
            raise ValueError(
                "RescaleNet publishes no pretrained weights; train one (see the README) and pass "
                "checkpoint='path/to/state_dict.pth'"
            )
        model = _rescalenet.create_model(name, **kwargs)
        if checkpoint is not None:
            state = _rescalenet.extract_state_dict(_rescalenet.read_checkpoint(checkpoint), source=checkpoint)
            model.load_state_dict(state)
        return model

    load.__name__ = load.__qualname__ = name
    load.__doc__ = _rescalenet.model_info(name).builder.__doc__
    return load


for _name in _rescalenet.list_models(kind="2d"):
    globals()[_name] = _entry_point(_name)
