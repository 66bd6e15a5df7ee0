"""One generic test over every 2D builder, in the spirit of timm's test_models.py."""
import pytest
import torch
from torch import nn

import rescalenet
from rescalenet import param_groups

# parameters at 1000 classes, as documented in the builders' docstrings (millions)
PARAMS_M = {
    "rescalenet18": 11.7, "rescalenet34": 21.8, "rescalenet50": 25.5, "rescalenet101": 44.5,
    "rescalenet152": 60.1, "rescalenet200": 64.6, "rescalenext50_32x4d": 25.0,
    "rescalenext101_32x8d": 88.7,
}


@pytest.mark.parametrize("name", sorted(rescalenet.MODEL_BUILDERS))
def test_builder_forward_backward(name):
    model = rescalenet.create_model(name, num_classes=7, drop_conv=0.03, drop_fc=0.3)
    x = torch.randn(2, 3, 64, 48)
    out = model(x)
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing
    n_params = sum(p.numel() for p in rescalenet.create_model(name).parameters())
    assert n_params / 1e6 == pytest.approx(PARAMS_M[name], abs=0.05)
    # torchvision module names, so tools and checkpoint code that rely on them work
    names = dict(model.named_children())
    for key in ["conv1", "layer1", "layer2", "layer3", "layer4", "fc"]:
        assert key in names
    assert not any(isinstance(m, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm))
                   for m in model.modules())


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
