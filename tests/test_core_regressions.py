"""Regression tests of issue 12's bugs: each failed before its fix."""
import copy
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import rescalenet
from rescalenet import AddBias, RescaleNet3d
from rescalenet.checkpoint import CheckpointError, extract_state_dict
from conftest import calibrate_on_noise

pytestmark = pytest.mark.usefixtures("one_thread")


def _counts(model):
    return [int(m.count) for m in model.modules() if isinstance(m, AddBias)]


# -- 1. gradient checkpointing never consumes calibration twice --------------------------
@pytest.mark.parametrize("build", [lambda: rescalenet.rescalenet18(num_classes=3, calibration_steps=4),
                                   lambda: RescaleNet3d(depth=18, num_classes=3, inflate=(0, 1, 0, 0),
                                                        calibration_steps=4)])
def test_grad_checkpointing_calibrates_exactly_like_a_plain_forward(build):
    torch.manual_seed(1)
    plain = build()
    ckpt = copy.deepcopy(plain)
    ckpt.set_grad_checkpointing(True)
    opts = [torch.optim.SGD(m.parameters(), lr=0.05) for m in (plain, ckpt)]
    size = (32, 32) if isinstance(plain, rescalenet.RescaleNet) and not isinstance(plain, RescaleNet3d) else (4, 32, 32)
    for step in range(6):  # calibration ends at step 4; steps 5-6 use the frozen means
        x = torch.randn(2, 3, *size) + 1.0
        for model, opt in zip((plain, ckpt), opts):
            opt.zero_grad()
            model(x).square().mean().backward()
        assert _counts(ckpt) == _counts(plain) == [min(step + 1, 4)] * len(_counts(plain))
        for (n, p), q in zip(plain.named_parameters(), ckpt.parameters()):
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-7, msg=n)
        for opt in opts:
            opt.step()
    for a, b in zip(plain.buffers(), ckpt.buffers()):
        torch.testing.assert_close(a, b)


# -- 2. the calibrated flag follows the buffers, however they are written --------------------
def _ema_copies(model):
    from torch.optim.swa_utils import AveragedModel

    copies = {"copy_": copy.deepcopy(model), "AveragedModel": AveragedModel(copy.deepcopy(model), use_buffers=True)}
    try:
        from timm.utils import ModelEmaV3
    except ImportError:
        pass
    else:
        copies["ModelEmaV3"] = ModelEmaV3(copy.deepcopy(model), decay=0.0)
    return copies


def test_ema_and_swa_copies_of_a_calibrated_model_are_calibrated():
    source = rescalenet.rescalenet18(num_classes=4)
    copies = _ema_copies(source)  # made before calibration, as training scripts do
    calibrate_on_noise(source, seed=0)
    with torch.no_grad():
        for p in source.parameters():
            p.add_(0.01 * torch.randn_like(p))
    for name, holder in copies.items():
        if name == "copy_":
            with torch.no_grad():
                for a, b in zip(holder.state_dict().values(), source.state_dict().values()):
                    a.copy_(b)
        elif name == "AveragedModel":
            holder.update_parameters(source)
        else:
            holder.update(source)
    source.eval()
    x = torch.randn(2, 3, 40, 40)
    with torch.no_grad():
        ref = source(x)
        for name, holder in copies.items():
            model = holder if name == "copy_" else holder.module
            assert rescalenet.is_calibrated(model), name
            torch.testing.assert_close(model.eval()(x), ref, rtol=1e-5, atol=1e-5, msg=name)


# -- 3. the fast path runs only when it is provably the same computation ---------------------
class FakeQuantConv2d(nn.Conv2d):
    """A QAT-style conv: the weight is rounded before use (a subclass the fast path must not bypass)."""

    def forward(self, x):
        return self._conv_forward(x, torch.round(self.weight * 64) / 64, self.bias)


def _calibrated18(**kw):
    model = rescalenet.rescalenet18(num_classes=3, **kw)
    calibrate_on_noise(model, seed=0)
    with torch.no_grad():  # non-trivial shifts, so a skipped shift shows
        for n, p in model.named_parameters():
            if n.endswith("._bias"):
                p.normal_(0, 0.5)
    return model.eval()


def _reference(model, x):
    model.set_fused_forward(False)
    with torch.no_grad():
        out = model(x)
    model.set_fused_forward(True)
    return out


def test_backward_hooks_see_every_bypassed_conv():
    model = _calibrated18().train()
    calls = []
    model.layer2[0].conv2.register_full_backward_hook(lambda *a: calls.append(1))
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert calls == [1]
    assert not model.layer2[0].can_fuse() and model.layer2[1].can_fuse()


def test_subclassed_or_wrapped_convs_and_a_replaced_stem_are_not_bypassed():
    x = torch.randn(2, 3, 48, 48)
    model = _calibrated18()
    old = model.layer1[0].conv1
    quant = FakeQuantConv2d(old.in_channels, old.out_channels, 3, 1, 1, bias=False)
    quant.weight.data.copy_(old.weight)
    model.layer1[0].conv1 = quant
    torch.testing.assert_close(model(x), _reference(model, x))
    assert not model.layer1[0].can_fuse()
    # a stem conv with a bias, dilation, groups and reflect padding
    model.conv1 = nn.Conv2d(3, 64, 7, 2, 6, dilation=2, groups=1, bias=True, padding_mode="reflect")
    with torch.no_grad():
        torch.testing.assert_close(model(x), _reference(model, x))
    # parametrizations change the type: the reference path again
    from torch.nn.utils import parametrize

    class Double(nn.Module):
        def forward(self, w):
            return 2 * w

    parametrize.register_parametrization(model.layer2[1].conv1, "weight", Double())
    with torch.no_grad():
        torch.testing.assert_close(model(x), _reference(model, x))
    assert not model.layer2[1].can_fuse()


def test_3d_blocks_fall_back_too():
    model = RescaleNet3d(depth=18, num_classes=3, inflate=(1, 0, 0, 0))
    calibrate_on_noise(model, size=(4, 32, 32), seed=0)
    model.eval()
    blk = model.layer1[0]
    assert blk.can_fuse()
    blk.conv1.register_forward_pre_hook(lambda *a: None)
    assert not blk.can_fuse()
    handle = torch.nn.modules.module.register_module_full_backward_hook(lambda *a: None)
    try:
        assert not model.layer2[0].can_fuse()  # a global hook sees every module
    finally:
        handle.remove()
    assert model.layer2[0].can_fuse()


# -- 4. checkpoints that almost loaded ---------------------------------------------------
def test_a_batchnorm_resnet_checkpoint_is_refused_with_what_it_is():
    import torchvision

    sd = torchvision.models.resnet18(num_classes=3).state_dict()
    model = rescalenet.rescalenet18(num_classes=3)
    for strict in (True, False):
        with pytest.raises(CheckpointError, match="normalization layers.*BatchNorm"):
            model.load_state_dict(sd, strict=strict)
    with pytest.raises(CheckpointError, match="bn1"):
        extract_state_dict({"state_dict": {"module." + k: v for k, v in sd.items()}})
    assert not rescalenet.is_calibrated(model)


def _as_official(state):
    """This project's state_dict in the official code's names and shapes."""
    out = {}
    for k, v in state.items():
        k = k.replace(".rescale._scale", "._scale").replace("final_addbias.", "addbias2.")
        if k.endswith(("._bias", ".init_mean")) and "fc" not in k:
            v = v.view(1, -1, 1, 1)
        out["module." + k] = v
    return {"net": out, "acc": 76.0}


def test_official_checkpoints_load_through_the_documented_mapping(tmp_path):
    trained = _calibrated18()
    with torch.no_grad():
        for n, p in trained.named_parameters():
            if n.endswith("._scale"):
                p.uniform_(0.5, 1.5)
    path = tmp_path / "ckpt.t7"
    torch.save(_as_official(trained.state_dict()), path)
    state = extract_state_dict(rescalenet.read_checkpoint(str(path)))
    assert "layer1.0.rescale._scale" in state and "final_addbias.init_mean" in state
    model = rescalenet.rescalenet18(num_classes=3)
    model.load_state_dict(state)  # strict
    assert rescalenet.is_calibrated(model)
    x = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), trained(x))
    # the network's own load_state_dict maps the official names too (MMEngine's loader path)
    raw = {k[len("module."):]: v for k, v in torch.load(path, weights_only=True)["net"].items()}
    other = rescalenet.rescalenet18(num_classes=3)
    other.load_state_dict(raw)
    torch.testing.assert_close(other.layer3[1].rescale._scale, trained.layer3[1].rescale._scale)


def test_truncated_and_missing_checkpoints_are_clear_errors(tmp_path):
    path = tmp_path / "x.pth"
    torch.save(rescalenet.rescalenet18().state_dict(), path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        rescalenet.read_checkpoint(str(path))
    with pytest.raises(CheckpointError, match="does not exist"):
        rescalenet.read_checkpoint(str(tmp_path / "nope.pth"))


# -- 5. smaller errors ----------------------------------------------------------------------
def test_fold_for_inference_folds_3d_networks():
    model = rescalenet.slowonly_rescalenet50(num_classes=4, stage_blocks=(1, 1, 1, 1))
    calibrate_on_noise(model, size=(4, 32, 32), seed=0)
    model.eval()
    folded = rescalenet.fold_for_inference(model)
    x = torch.randn(1, 3, 4, 40, 36)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-5)
    assert not any(isinstance(m, AddBias) for m in folded.modules())


def test_feature_extractors_build_only_what_they_return():
    model = rescalenet.rescalenet50(out_indices=(0, 1))
    assert not hasattr(model, "layer3") and not hasattr(model, "layer4")
    assert model.num_blocks == 16  # the block indices still count the whole network
    assert model.layer2[0].rescale.shortcut_scale == pytest.approx(math.sqrt(18 / 19))
    assert rescalenet.calibrate(model, [torch.randn(2, 3, 64, 64) for _ in range(8)]) == 8
    with pytest.raises(RuntimeError, match="feature extractor.*no head"):
        model.forward_head(torch.randn(1, 512, 8, 8))
    with pytest.raises(ValueError, match="frozen_stages must be in -1..2"):
        rescalenet.rescalenet50(out_indices=(0, 1), frozen_stages=3)


def test_bad_constructor_arguments():
    for build in (rescalenet.rescalenet18, lambda **kw: RescaleNet3d(depth=18, **kw)):
        with pytest.raises(ValueError, match="num_classes must be an integer >= 0"):
            build(num_classes=-1)
        with pytest.raises(TypeError, match="offset c must be an integer"):
            build(c=7.5)
        with pytest.raises(ValueError, match="offset c must be >= 0"):
            build(c=-1)
    with pytest.raises(ValueError, match="multiplier must be one of"):
        rescalenet.rescalenet18(multiplier="scaler")


def test_an_eval_forward_before_calibration_warns_once():
    model = rescalenet.rescalenet18(num_classes=3).eval()
    x = torch.randn(1, 3, 32, 32)
    with pytest.warns(UserWarning, match="before calibration"):
        model(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model(x)  # no second warning
        calibrate_on_noise(model)
        model.eval()(x)


# -- 6. FX tracing and TorchScript --------------------------------------------------------------
def test_torchvision_feature_extraction_with_addbias_as_a_leaf():
    from torchvision.models.feature_extraction import create_feature_extractor

    model = _calibrated18()
    x = torch.randn(1, 3, 64, 64)
    extractor = create_feature_extractor(model, {"layer2": "c3", "layer4": "c5"},
                                         tracer_kwargs={"leaf_modules": [AddBias]})
    with torch.no_grad():
        out = extractor(x)
        ref = model.forward_stages(x, (1, 3))
    torch.testing.assert_close(out["c3"], ref[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out["c5"], ref[1], rtol=1e-4, atol=1e-5)
    with pytest.raises(TypeError, match="leaf module"):
        create_feature_extractor(model, {"layer4": "c5"})


def test_torchscript_is_refused_with_the_reason():
    with pytest.raises(RuntimeError, match="torch.jit.script.*deprecat.*torch.compile or torch.export"):
        torch.jit.script(rescalenet.rescalenet18(num_classes=3))


# -- 7. the official vector multiplier -------------------------------------------------------
def test_inner_vector_multipliers_are_the_official_variant():
    model = rescalenet.rescalenet50(num_classes=3, multiplier="inner_vector")
    blk = model.layer1[0]
    assert blk.rescale.multiplier == "scalar" and blk.mult1._scale.shape == (64,) and blk.mult2._scale.shape == (64,)
    assert "layer1.0.mult2._scale" in model.no_weight_decay()
    x = torch.randn(2, 3, 48, 48)
    calibrate_on_noise(model, size=(48, 48), seed=0)
    with torch.no_grad():
        blk.mult1._scale.uniform_(0.5, 1.5)
        out = model.eval()(x)
        # the official forward: out = relu(conv1(..)) * _scale1, before addbias2
        h = blk.relu(blk.conv1(blk.addbias1(model.maxpool(model.stem_activation(x))))) * blk.mult1._scale.view(1, -1, 1, 1)
        ref = blk.mult2(blk.relu(blk.conv2(blk.addbias2(h))))
        ref = blk.residual_sum(model.maxpool(model.stem_activation(x)), blk.conv3(blk.addbias3(ref)))
        torch.testing.assert_close(blk(model.maxpool(model.stem_activation(x))), ref)
    assert not blk.can_fuse()  # the per-channel vectors are not fused
    assert torch.isfinite(out).all()
    # official names map: layerX.Y._scale1 -> layerX.Y.mult1._scale
    state = {k.replace(".mult1._scale", "._scale1").replace(".mult2._scale", "._scale2"): v
             for k, v in model.state_dict().items()}
    assert "layer1.0._scale1" in state
    other = rescalenet.rescalenet50(num_classes=3, multiplier="inner_vector")
    other.load_state_dict(state)
    torch.testing.assert_close(other.layer1[0].mult1._scale, blk.mult1._scale)
    with pytest.raises(ValueError, match="inner_vector"):
        rescalenet.fold_for_inference(model)
    F.cross_entropy(model.train()(x), torch.tensor([0, 1])).backward()
    assert all(p.grad is not None for p in model.parameters())
