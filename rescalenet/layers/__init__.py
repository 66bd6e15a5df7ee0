"""The building blocks of RescaleNet, one concept per file:

* :mod:`.addbias`: the bias reparameterization ``AddBias`` (``x + b - mu``, ``mu``
  calibrated on the first training batches) and its helpers;
* :mod:`.residual`: the rescaled residual sum ``RescaledResidual`` and the
  learned multipliers;
* :mod:`.shortcut_pool`: a variance-preserving pool for the downsample shortcut (ablation).
"""
from .addbias import (
    LAYOUTS,
    AddBias,
    calibrate,
    checkpoint_without_recalibration,
    is_calibrated,
    reset_calibration,
)
from .residual import MULTIPLIERS, ChannelMultiplier, RescaledResidual
from .shortcut_pool import VariancePreservingPool

__all__ = [
    "AddBias",
    "RescaledResidual",
    "ChannelMultiplier",
    "VariancePreservingPool",
    "calibrate",
    "checkpoint_without_recalibration",
    "is_calibrated",
    "reset_calibration",
    "MULTIPLIERS",
    "LAYOUTS",
]
