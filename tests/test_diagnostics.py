"""`python -m rescalenet.diagnostics` writes its four PNG plots and the numbers behind them."""
import json
import os

import pytest
import torch

import rescalenet
from rescalenet import diagnostics

PNGS = ["variance.png", "contribution.png", "dead_relu.png", "multipliers.png"]


def _is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_diagnostics_for_a_checkpoint(tmp_path):
    pytest.importorskip("matplotlib")
    model = rescalenet.rescalenet18(num_classes=10)
    rescalenet.calibrate(model, [torch.randn(4, 3, 32, 32) for _ in range(8)])
    with torch.no_grad():
        for i, blk in enumerate(b for s in (model.layer1, model.layer2, model.layer3, model.layer4) for b in s):
            blk.rescale._scale.fill_(0.5 + 0.1 * i)  # "learned" multipliers
    ckpt = tmp_path / "ck.pth"
    torch.save({"state_dict": model.state_dict(), "arch": "rescalenet18",
                "model_kwargs": {"num_classes": 10}}, ckpt)
    out = tmp_path / "diag"
    res = diagnostics.main(["--checkpoint", str(ckpt), "--output", str(out), "--size", "32", "--batch", "4",
                            "--calib-batches", "1", "2", "--calib-sizes", "2", "4"])
    for name in PNGS:
        assert _is_png(out / name), name
    saved = json.loads((out / "diagnostics.json").read_text())
    assert saved["multipliers"] == pytest.approx([0.5 + 0.1 * i for i in range(8)])
    curves = saved["block_variance"]
    assert set(curves) == {"RescaleNet (init)", "plain residual, no norm (init)", "BatchNorm ResNet (init)",
                           "RescaleNet (trained)"}
    assert all(len(v) == 8 for v in curves.values())
    # the method's point: without normalization the plain net's variance grows with depth,
    # RescaleNet's stays flat
    growth = {k: v[-1] / v[0] for k, v in curves.items()}
    assert growth["plain residual, no norm (init)"] > 4 * growth["RescaleNet (init)"]
    shares = saved["block_share"]["init"]
    assert len(shares) == 8 and all(0 < v < 1 for v in shares)  # rescaled branches: a fraction of the stage
    dead = saved["dead_relu"]
    assert dead["calibration_batches"] == [0, 1, 2] and set(dead["fraction"]) == {"batch 2", "batch 4"}
    assert all(0 <= f <= 1 for row in dead["fraction"].values() for f in row)
    assert res["arch"] == "rescalenet18"


def test_bad_checkpoint_path_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit):
        diagnostics.main(["--checkpoint", str(tmp_path / "missing.pth"), "--output", str(tmp_path)])
