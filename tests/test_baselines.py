"""Every baseline builds, runs a training step, and has what the harness relies on."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rescalenet import baselines
from rescalenet.baselines import baseline_param_groups, create_baseline, fold_batchnorm

NAMES = ["resnet50", "gn_resnet50", "plain_resnet50", "fixup_resnet50", "skipinit_resnet50",
         "narrow_rescale_d50", "narrow_plain_d50", "resnet18"]


@pytest.mark.parametrize("name", NAMES)
def test_baseline_builds_and_steps(name):
    model = create_baseline(name, num_classes=5, drop_fc=0.3)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([1, 4])
    opt = torch.optim.SGD(baseline_param_groups(model, name, 0.01, 1e-4), lr=0.01, momentum=0.9)
    before = [p.detach().clone() for p in model.parameters()]
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    changed = sum(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    assert changed > 0
    norms = (nn.BatchNorm2d, nn.GroupNorm)
    has_norm = any(isinstance(m, norms) for m in model.modules())
    assert has_norm == (name.startswith(("resnet", "gn_")))


def test_fixup_init_and_groups():
    model = create_baseline("fixup_resnet50", num_classes=10)
    assert all(float(b.conv3.weight.abs().sum()) == 0 for b in model.layer1)
    assert float(model.fc.weight.abs().sum()) == 0
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model(x), model.fc.bias.expand(2, 10))  # zero residuals + zero fc at init
    groups = baseline_param_groups(model, "fixup_resnet50", 0.1, 1e-4)
    assert groups[1]["lr"] == pytest.approx(0.01) and all(p.numel() == 1 for p in groups[1]["params"])


@pytest.mark.parametrize("name", ["fixup_resnet_cifar56", "fixup_resnet18"])
def test_basic_fixup_init_follows_the_fixup_code(name):
    """conv1 std sqrt(2 / fan_out) * L^-1/2, conv2 and the classifier zero, the downsample
    conv std sqrt(2 / fan_out) (He over the fan-out, as the Fixup code and the bottleneck
    version here)."""
    torch.manual_seed(0)
    model = create_baseline(name, num_classes=10)
    blocks = [b for i in range(1, 5) if hasattr(model, f"layer{i}") for b in getattr(model, f"layer{i}")]
    L = len(blocks)
    for b in blocks:
        fan_out = b.conv1.weight.shape[0] * 9
        assert b.conv1.weight.std().item() == pytest.approx((2 / fan_out) ** 0.5 * L ** -0.5, rel=0.1)
        assert float(b.conv2.weight.abs().sum()) == 0
        if b.downsample is not None:
            w = b.downsample.weight
            assert w.std().item() == pytest.approx((2 / w.shape[0]) ** 0.5, rel=0.1), "fan-out, not fan-in"
    assert float(model.fc.weight.abs().sum()) == 0


def test_skipinit_starts_as_identity_residuals():
    model = create_baseline("skipinit_resnet50", num_classes=3)
    blk = model.layer1[1]
    assert float(blk.skipinit_gain) == 0
    x = torch.relu(torch.randn(2, 256, 8, 8))
    torch.testing.assert_close(blk(x), x)


def test_narrow_depth_and_rescale_blocks():
    plain = create_baseline("narrow_plain_d1001", num_classes=10)
    assert plain.depth == 1001 and len(plain.blocks) == 333
    resc = create_baseline("narrow_rescale_d200", num_classes=10)
    assert resc.blocks[0].rescale.shortcut_scale == pytest.approx((65 / 66) ** 0.5)
    with pytest.raises(ValueError, match="3 \\* blocks \\+ 2"):
        create_baseline("narrow_plain_d51")


def test_fold_batchnorm_is_exact_in_eval():
    model = create_baseline("resnet18", num_classes=4)
    with torch.no_grad():  # non-trivial running statistics
        model.train()
        for _ in range(3):
            model(torch.randn(4, 3, 32, 32) * 2 + 1)
    model.eval()
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-4)


def test_unknown_baseline_and_lazy_imports():
    with pytest.raises(ValueError, match="unknown baseline"):
        create_baseline("resnet42")
    assert baselines.is_baseline("nf_resnet50") and "nf_resnet50" in baselines.list_baselines()
    # timm, matplotlib and tensorboard are imported only when asked for
    code = ("import sys, rescalenet.baselines, rescalenet.train, rescalenet.diagnostics; "
            "bad = [m for m in ('timm', 'matplotlib', 'torch.utils.tensorboard') if m in sys.modules]; "
            "assert not bad, bad")
    import os, subprocess, sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=root))
    assert proc.returncode == 0, proc.stderr
