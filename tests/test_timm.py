"""timm integration: every registered RescaleNet follows timm's model conventions
(a generic test in the spirit of timm's own tests/test_models.py), features_only,
checkpoints through timm's helpers, optimizer groups, and timm staying optional."""
import importlib
import math
import os
import subprocess
import sys
import warnings

import pytest
import torch

timm = pytest.importorskip("timm")

import rescalenet  # noqa: E402
import rescalenet.timm as rtimm  # noqa: E402
from rescalenet.fold import fold_for_inference  # noqa: E402
from conftest import calibrate_on_noise  # noqa: E402

NAMES = sorted(rtimm.MODEL_NAMES)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


pytestmark = pytest.mark.usefixtures("one_thread")


def test_import_rescalenet_does_not_import_timm():
    code = "import sys, rescalenet, rescalenet.fold; assert 'timm' not in sys.modules, 'timm imported'"
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=ROOT)


def test_registry_lists_every_variant_and_reimport_is_silent():
    assert sorted(timm.list_models("rescalene*")) == NAMES
    assert set(NAMES) == set(rescalenet.MODEL_BUILDERS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # timm warns when a name is registered twice
        importlib.import_module("rescalenet.timm")
        importlib.reload(rtimm)
    assert sorted(timm.list_models("rescalene*")) == NAMES
    cfg = timm.models.get_pretrained_cfg("rescalenet50")
    assert cfg.input_size == (3, 224, 224) and cfg.mean == (0.485, 0.456, 0.406)
    assert not timm.list_models("rescalene*", pretrained=True)  # no weights are published


@pytest.mark.parametrize("name", NAMES)
def test_model_conventions(name):
    """forward/backward at the default and another input size, forward_features,
    reset_classifier, num_classes=0, pretrained_cfg names, no_weight_decay."""
    model = timm.create_model(name, pretrained=False, num_classes=5, drop_rate=0.1)
    assert isinstance(model, rtimm.TimmRescaleNet) and model.dropout.p == 0.1
    cfg = model.pretrained_cfg
    state = model.state_dict()
    assert cfg["first_conv"] + ".weight" in state and cfg["classifier"] + ".weight" in state
    assert model.get_classifier() is model.fc

    model.train()
    out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    out.mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing

    model.eval()
    x = torch.randn(1, 3, 96, 80)
    with torch.no_grad():
        feats = model.forward_features(x)
        stride = model.feature_info[-1]["reduction"]  # 32 (ImageNet layout), 4 (CIFAR layout)
        assert feats.shape == (1, model.num_features, -(-96 // stride), -(-80 // stride))
        assert model(x).shape == (1, 5)
        model.reset_classifier(0)
        assert model(x).shape == (1, model.num_features)  # pooled features
        assert torch.allclose(model(x), model.forward_head(feats, pre_logits=True))
        model.reset_classifier(0, "")
        assert model(x).shape == feats.shape  # unpooled
    with pytest.raises(ValueError, match="num_classes=0"):
        model.reset_classifier(7)  # keeps the current pooling (''): a classifier needs 'avg'
    model.reset_classifier(7, "avg")
    assert model(x).shape == (1, 7)
    names = model.no_weight_decay()
    assert names == {n for n, _ in model.named_parameters() if n.endswith(("._bias", "._scale"))}
    assert "conv1.weight" not in names and "layer1.0.addbias1._bias" in names


@pytest.mark.parametrize("name", NAMES)
def test_features_only(name):
    model = timm.create_model(name, features_only=True).eval()
    info = model.feature_info
    layout = rescalenet.model_info(name).layout
    assert info.reduction() == {"imagenet": [2, 4, 8, 16, 32], "cifar": [1, 1, 2, 4]}[layout]
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        outs = model(x)
    assert len(outs) == len(info.reduction())
    for o, ch, red in zip(outs, info.channels(), info.reduction()):
        assert o.shape == (1, ch, 64 // red, 96 // red)


@pytest.mark.parametrize("name", ["rescalenet18", "rescalenet50"])
def test_features_equal_the_core_stage_outputs(name):
    """features_only (list and getter wrappers) computes exactly the core's stage maps."""
    feat = timm.create_model(name, features_only=True, out_indices=(1, 2, 3, 4))
    assert feat.feature_info.reduction() == [4, 8, 16, 32]
    core = rescalenet.create_model(name, out_indices=(0, 1, 2, 3))
    calibrate_on_noise(core)
    missing, unexpected = feat.load_state_dict(core.state_dict(), strict=False)
    assert not missing
    getter = timm.create_model(name, features_only=True, out_indices=(1, 3), feature_cls="getter")
    assert not getter.model.load_state_dict(core.state_dict(), strict=False).missing_keys
    for m in (core, feat, getter):
        m.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref, outs, picked = core(x), feat(x), getter(x)
    for r, o in zip(ref, outs):
        assert torch.allclose(r, o, atol=1e-5, rtol=1e-5)
    assert torch.allclose(picked[0], ref[0], atol=1e-5) and torch.allclose(picked[1], ref[2], atol=1e-5)
    # the folded feature extractor gives the same maps
    with torch.no_grad():
        folded = fold_for_inference(feat)(x)
    for r, o in zip(ref, folded):
        assert torch.allclose(r, o, atol=1e-4, rtol=1e-4)


def test_channels_last_and_grad_checkpointing():
    model = calibrate_on_noise(timm.create_model("rescalenet18", num_classes=4))
    x = torch.randn(2, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        ref = model(x)
        cl = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
    assert torch.allclose(ref, cl, atol=1e-4, rtol=1e-4)
    with torch.no_grad():  # timm models fold like core ones
        assert torch.allclose(ref, fold_for_inference(model)(x), atol=1e-4, rtol=1e-4)
        model.reset_classifier(0, "")
        assert torch.allclose(model(x), fold_for_inference(model)(x), atol=1e-4, rtol=1e-4)
    model = model.to(memory_format=torch.contiguous_format).train()
    grads = []
    for enable in (False, True):
        model.zero_grad()
        model.set_grad_checkpointing(enable)
        model(x).sum().backward()
        grads.append(model.conv1.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-5, rtol=1e-4)


def test_pretrained_from_a_core_checkpoint(tmp_path):
    """pretrained=True with a local file saved from the core model: weights and the
    AddBias calibration load; a different num_classes drops only the classifier."""
    core = calibrate_on_noise(rescalenet.rescalenet18(num_classes=1000)).eval()
    path = tmp_path / "rescalenet18.pth"
    torch.save(core.state_dict(), path)
    model = timm.create_model("rescalenet18", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    assert rescalenet.is_calibrated(model)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(core(x), model.eval()(x), atol=1e-5)
    new_head = timm.create_model(
        "rescalenet18", pretrained=True, num_classes=3, pretrained_cfg_overlay=dict(file=str(path))
    )
    assert new_head.fc.out_features == 3 and rescalenet.is_calibrated(new_head)
    assert torch.equal(new_head.layer4[1].conv2.weight, core.layer4[1].conv2.weight)
    backbone = timm.create_model(
        "rescalenet18", pretrained=True, features_only=True, out_indices=(4,),
        pretrained_cfg_overlay=dict(file=str(path)),
    ).eval()
    with torch.no_grad():
        assert torch.allclose(backbone(x)[0], core.forward_features(x), atol=1e-5)
    with pytest.raises(RuntimeError, match="No pretrained weights"):
        timm.create_model("rescalenet18", pretrained=True)


def test_save_and_load_through_timm_helpers(tmp_path):
    model = calibrate_on_noise(timm.create_model("rescalenet18", num_classes=4)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
    from timm.utils import get_state_dict

    # the checkpoint layout of timm's train.py / CheckpointSaver
    ckpt = tmp_path / "checkpoint.pth.tar"
    torch.save({"arch": "rescalenet18", "state_dict": get_state_dict(model)}, ckpt)
    other = timm.create_model("rescalenet18", num_classes=4)
    timm.models.load_checkpoint(other, str(ckpt))
    with torch.no_grad():
        assert torch.allclose(ref, other.eval()(x), atol=1e-6)
    again = timm.create_model("rescalenet18", num_classes=4, checkpoint_path=str(ckpt)).eval()
    assert rescalenet.is_calibrated(again)
    # Hugging Face layout (config.json + weights), loaded back with the local-dir: source
    pytest.importorskip("huggingface_hub")
    timm.models.save_for_hf(model, str(tmp_path / "hf"))
    loaded = timm.create_model(f"local-dir:{tmp_path / 'hf'}", pretrained=True).eval()
    assert isinstance(loaded, rtimm.TimmRescaleNet) and loaded.num_classes == 4
    with torch.no_grad():
        assert torch.allclose(ref, loaded(x), atol=1e-6)


def test_timm_optimizer_groups():
    from timm.optim import create_optimizer_v2

    model = timm.create_model("rescalenet18", num_classes=4)
    opt = create_optimizer_v2(model, "sgd", lr=0.1, weight_decay=1e-4)
    by_id = {id(p): n for n, p in model.named_parameters()}
    for group in opt.param_groups:
        names = [by_id[id(p)] for p in group["params"]]
        exempt = [n for n in names if n.endswith(("._bias", "._scale"))]
        if group["weight_decay"] > 0:
            assert not exempt and "conv1.weight" in names
        else:
            assert exempt
    # layer-wise lr decay goes through group_matcher
    opt = create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.7)
    scales = {g["lr_scale"] for g in opt.param_groups}
    assert len(scales) > 2 and max(scales) == pytest.approx(1.0)


def test_clear_errors():
    with pytest.raises(ValueError, match="stochastic depth"):
        timm.create_model("rescalenet18", drop_path_rate=0.1)
    with pytest.raises(ValueError, match="global_pool"):
        timm.create_model("rescalenet18", global_pool="max")
    with pytest.raises(ValueError, match="features_only"):
        timm.create_model("rescalenet18", out_indices=(1, 2))
    with pytest.raises(ValueError, match="frozen_stages"):
        timm.create_model("rescalenet18", features_only=True, frozen_stages=1)
    m = timm.create_model("rescalenet18", num_classes=0, global_pool="", drop_path_rate=0.0)
    assert m(torch.randn(1, 3, 64, 64)).shape == (1, 512, 2, 2)
    assert math.isclose(timm.create_model("rescalenet18", drop_rate=0.25).dropout.p, 0.25)
