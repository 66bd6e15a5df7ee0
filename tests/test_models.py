"""One generic test over every registered model, in the spirit of timm's tests/test_models.py:
forward, backward with a gradient on every parameter, fused equals reference, folded
equals eval, state_dict round trip, features. Then the 2D builders' own API."""
import io

import pytest
import torch
from torch import nn

import rescalenet
from rescalenet import param_groups
from rescalenet.baselines import create_baseline
from conftest import calibrate_on_noise

pytestmark = pytest.mark.usefixtures("one_thread")

# parameters at the builders' default classes (1000; 10 for the CIFAR layout), millions,
# as documented in the builders' docstrings and in He et al. 2016, table 6
PARAMS_M = {
    "rescalenet18": 11.7, "rescalenet34": 21.8, "rescalenet50": 25.5, "rescalenet101": 44.5,
    "rescalenet152": 60.1, "rescalenet200": 64.6, "rescalenext50_32x4d": 25.0,
    "rescalenext101_32x8d": 88.7, "rescalenet_cifar20": 0.27, "rescalenet_cifar32": 0.47,
    "rescalenet_cifar56": 0.85, "rescalenet_cifar110": 1.73, "rescalenet_cifar1202": 19.4,
    "rescalenet_wrn40_4": 8.94,
}
RESCALENETS = rescalenet.list_models(kind="2d") + rescalenet.list_models(kind="3d")


def _input(name, batch=2):
    info = rescalenet.model_info(name)
    if info.kind == "3d":
        return torch.randn(batch, 3, 8, 32, 32)
    return torch.randn(batch, 3, *((20, 18) if info.layout == "cifar" else (64, 48)))


def _build(name, **kw):
    kw.setdefault("num_classes", 7)
    return rescalenet.create_model(name, **kw)


@pytest.mark.parametrize("name", RESCALENETS)
def test_every_registered_rescalenet(name):
    info = rescalenet.model_info(name)
    x = _input(name)
    model = _build(name, drop_conv=0.03, drop_fc=0.3)
    assert not any(isinstance(m, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm))
                   for m in model.modules())
    # forward / backward, a gradient on every parameter
    out = model(x)
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing
    # calibrated: the fused forward equals the module-by-module reference (eval, train grads)
    calibrate_on_noise(model, size=x.shape[2:])
    model.eval()
    with torch.no_grad():
        fused = model(x)
        model.set_fused_forward(False)
        ref = model(x)
        model.set_fused_forward(True)
    torch.testing.assert_close(fused, ref, rtol=1e-4, atol=1e-5)
    blocks = [m for m in model.modules() if isinstance(m, rescalenet.RescaleBlock)]
    assert blocks and all(b.can_fuse() for b in blocks)
    # folded equals eval
    folded = rescalenet.fold_for_inference(model)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), ref, rtol=1e-4, atol=1e-4)
    # state_dict round trip, calibration included, never recalibrating
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    again = _build(name, drop_conv=0.03, drop_fc=0.3)
    again.load_state_dict(torch.load(buf, weights_only=True))
    assert rescalenet.is_calibrated(again)
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(x), ref)
    # features: the stage maps of a feature extractor equal the classifier's own
    feats = _build(name, num_classes=0) if info.kind == "3d" else _build(name, out_indices=tuple(range(model.num_stages)))
    feats.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith(("fc.", "final_addbias."))},
                          strict=info.kind != "3d")
    with torch.no_grad():
        maps = feats.eval().forward_stages(x)
        assert len(maps) == model.num_stages
        for f, fi in zip(maps, model.feature_info):
            assert f.shape[1] == fi["num_chs"]
        torch.testing.assert_close(maps[-1], model.forward_features(x))
    if info.kind == "2d":
        n_params = sum(p.numel() for p in rescalenet.create_model(name).parameters())
        assert n_params / 1e6 == pytest.approx(PARAMS_M[name], abs=0.05)
        names = dict(model.named_children())  # torchvision module names
        for key in ["conv1", "fc"] + [f"layer{i + 1}" for i in range(model.num_stages)]:
            assert key in names


@pytest.mark.parametrize("name", rescalenet.list_models(kind="baseline", layout="cifar", pattern="*cifar20")
                         + ["resnet18", "fixup_resnet18", "skipinit_resnet18", "gn_resnet18", "plain_resnet18"])
def test_every_basic_block_baseline(name):
    """The basic-block baselines: forward, a gradient on every parameter, state_dict round trip."""
    cifar = "cifar" in name
    model = create_baseline(name, num_classes=5, drop_fc=0.3, drop_conv=0.03, in_chans=1)
    x = torch.randn(2, 1, *((20, 18) if cifar else (64, 48)))
    out = model(x)
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    out.sum().backward()
    # Fixup's zero classifier and zero last convs leave some gradients exactly zero, never None
    assert not [n for n, p in model.named_parameters() if p.grad is None]
    again = create_baseline(name, num_classes=5, drop_conv=0.03, in_chans=1)
    again.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(x), model.eval()(x))


@pytest.mark.parametrize("name", ["rescalenet18", "rescalenet50"])
def test_feature_extraction_strides(name):
    model = rescalenet.create_model(name, out_indices=(0, 1, 2, 3))
    assert not hasattr(model, "fc")
    x = torch.randn(1, 3, 96, 64)
    feats = model(x)
    assert isinstance(feats, tuple) and len(feats) == 4
    for f, info in zip(feats, model.feature_info):
        assert f.shape[1] == info["num_chs"]
        assert (f.shape[2], f.shape[3]) == (96 // info["reduction"], 64 // info["reduction"])
    only = rescalenet.create_model(name, out_indices=(1, 3))(x)
    assert [f.shape[1] for f in only] == [feats[1].shape[1], feats[3].shape[1]]


def test_frozen_stages_freeze_what_they_say():
    model = rescalenet.rescalenet18(out_indices=(0, 1, 2, 3), frozen_stages=2)
    model.train()
    frozen = ["conv1", "addbias1", "layer1", "layer2"]
    for name, p in model.named_parameters():
        assert p.requires_grad == (name.split(".")[0] not in frozen), name
    assert not model.layer2.training and model.layer3.training
    model(torch.randn(2, 3, 64, 64))
    assert int(model.layer1[0].addbias1.count) == 0  # frozen stages never recalibrate
    assert int(model.layer3[0].addbias1.count) == 1


def test_clear_errors():
    with pytest.raises(ValueError, match="unknown RescaleNet depth 42"):
        rescalenet.resnet._rescalenet(42)
    with pytest.raises(ValueError, match="unknown model"):
        rescalenet.create_model("rescalenet42")
    model = rescalenet.rescalenet18(num_classes=3)
    with pytest.raises(ValueError, match="4-D"):
        model(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match="3 input channels, got 1"):
        model(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match="out_indices"):
        rescalenet.rescalenet18(out_indices=(4,))
    with pytest.raises(ValueError, match="frozen_stages"):
        rescalenet.rescalenet18(frozen_stages=5)


def test_param_groups_exempt_exactly_addbias_biases_and_multipliers():
    model = rescalenet.rescalenet50(num_classes=10)
    decay, no_decay = param_groups(model, 1e-4, lr=0.1)
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0 and decay["lr"] == 0.1
    ids = {id(p) for p in no_decay["params"]}
    addbias = [m._bias for m in model.modules() if isinstance(m, rescalenet.AddBias)]
    scales = [m._scale for m in model.modules() if isinstance(m, rescalenet.RescaledResidual)]
    assert ids == {id(p) for p in addbias + scales}
    decayed = {id(p) for p in decay["params"]}
    assert id(model.fc.weight) in decayed and id(model.fc.bias) in decayed  # as the official recipe
    assert all(m.weight.dim() == 4 and id(m.weight) in decayed for m in model.modules() if isinstance(m, nn.Conv2d))
    assert len(decayed) + len(ids) == sum(1 for _ in model.parameters())
    assert set(model.no_weight_decay()) == {n for n, p in model.named_parameters() if id(p) in ids}
    # frozen parameters are left out
    frozen = rescalenet.rescalenet18(out_indices=(3,), frozen_stages=1)
    groups = param_groups(frozen, 1e-4)
    assert all(p.requires_grad for g in groups for p in g["params"])


def test_classifier_api():
    model = rescalenet.rescalenet18(num_classes=10)
    assert model.get_classifier() is model.fc
    model.reset_classifier(4)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 4)
    model.reset_classifier(0)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 512)
    assert model.forward_head(model.forward_features(torch.randn(1, 3, 32, 32)), pre_logits=True).shape == (1, 512)


def test_grad_checkpointing_gives_the_same_gradients():
    model = rescalenet.rescalenet18(num_classes=3)
    x = torch.randn(2, 3, 32, 32)
    rescalenet.calibrate(model, [x] * 8)
    model.zero_grad()
    model(x).sum().backward()
    ref = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x).sum().backward()
    for a, p in zip(ref, model.parameters()):
        torch.testing.assert_close(p.grad, a)
