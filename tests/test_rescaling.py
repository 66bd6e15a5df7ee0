"""The method's equations, checked numerically on the built networks."""
import math

import pytest
import torch

import rescalenet
from rescalenet import calibrate
from rescalenet.rescale import init_branch_weight_
from rescalenet.resnet import BasicBlock, Bottleneck


def _blocks(model):
    return [blk for i in range(1, 5) for blk in getattr(model, f"layer{i}")]


def _branch_weight_at_init(blk):
    # residual_scale * m_k * (product of the branch layers' init gains)
    gain = rescalenet.branch_init_gain(blk.index, blk.num_blocks, blk.num_branch_layers, blk.drop_conv)
    return blk.rescale.residual_scale * float(blk.rescale._scale.detach().mean()) * gain ** blk.num_branch_layers


@pytest.mark.parametrize("name", ["rescalenet18", "rescalenet50", "rescalenet101", "rescalenet200"])
def test_alpha_beta_unit_norm_and_equal_contribution(name):
    model = rescalenet.create_model(name, num_classes=10)
    blocks = _blocks(model)
    L = len(blocks)
    assert model.num_blocks == L
    assert [b.index for b in blocks] == list(range(L - 1, 2 * L - 1))  # c = L - 1
    weights = []
    for blk in blocks:
        alpha, beta = blk.rescale.shortcut_scale, _branch_weight_at_init(blk)
        assert alpha**2 + beta**2 == pytest.approx(1.0, abs=1e-12)
        assert blk.rescale.residual_scale == pytest.approx(1 / math.sqrt(L))
        # unrolled: branch k reaches the output through all later shortcuts
        later = math.prod(b.rescale.shortcut_scale for b in blocks[blocks.index(blk) + 1 :])
        weights.append(beta * later)
    assert weights == pytest.approx([1 / math.sqrt(2 * L - 1)] * L, rel=1e-9)


def test_official_values_for_resnet50():
    model = rescalenet.rescalenet50()
    blocks = _blocks(model)
    assert blocks[0].rescale.shortcut_scale == pytest.approx(math.sqrt(15 / 16))
    assert blocks[-1].rescale.shortcut_scale == pytest.approx(math.sqrt(30 / 31))
    assert rescalenet.branch_init_gain(30, 16, 3) == pytest.approx(0.8956, abs=1e-4)
    assert 1 / math.sqrt(2 * 16 - 1) == pytest.approx(0.1796, abs=1e-4)


def test_branch_init_reproduces_beta_k_empirically():
    """At init, with a linearised branch (no ReLU dead zones are involved for the
    product of stds), each conv's weight std is the He std times the gain."""
    model = rescalenet.rescalenet50(drop_conv=0.1)
    for blk in _blocks(model):
        gain = rescalenet.branch_init_gain(blk.index, 16, 3, blk.drop_conv)
        for conv in blk.branch_layers():
            fan_in = conv.weight[0].numel()
            expected = gain * math.sqrt(2 / fan_in)
            assert conv.weight.std().item() == pytest.approx(expected, rel=0.1)
        ds = blk.downsample
        if ds is not None:
            assert ds[2].weight.std().item() == pytest.approx(1 / math.sqrt(ds[2].weight[0].numel()), rel=0.1)
    # dropout compensation only in stages 3-4
    assert model.layer2[0].drop_conv == 0 and model.layer3[0].drop_conv == 0.1


def _stage_second_moments(model, x):
    out = []
    hooks = [blk.register_forward_hook(lambda m, i, o: out.append(o.double().pow(2).mean().item()))
             for blk in _blocks(model)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    stages, i = [], 0
    for n in model.layers:
        stages.append(out[i : i + n])
        i += n
    return stages


@pytest.mark.parametrize("depth", [50, 101, 200])
def test_per_block_second_moment_is_flat_within_every_stage(depth):
    torch.manual_seed(depth)
    model = rescalenet.create_model(f"rescalenet{depth}", num_classes=10)
    x = torch.randn(8, 3, 64, 64)
    calibrate(model, [x] * 8)
    model.train()
    for stage in _stage_second_moments(model, x):
        assert max(stage) / min(stage) <= 1.5, stage


def _make_plain_residual(model):
    """The same network with plain ``x + F(x)`` residuals and standard He init."""
    for blk in _blocks(model):
        blk.rescale.shortcut_scale = 1.0
        blk.rescale.residual_scale = 1.0
        for conv in blk.branch_layers():
            init_branch_weight_(conv, 1.0)
    return model


def test_plain_residual_network_without_normalization_blows_up():
    torch.manual_seed(0)
    model = _make_plain_residual(rescalenet.rescalenet200(num_classes=10))
    x = torch.randn(4, 3, 64, 64)
    calibrate(model, [x] * 8)
    model.train()
    stages = _stage_second_moments(model, x)
    # layer2 (24 blocks) and layer3 (36 blocks) are the long stages of ResNet-200
    assert max(s[-1] / s[0] for s in stages[1:3]) > 100


def test_multiplier_kinds():
    for kind, shape in [("scalar", (1,)), ("vector", (256,))]:
        blk = rescalenet.rescalenet50(multiplier=kind).layer1[0]
        assert tuple(blk.rescale._scale.shape) == shape
    assert rescalenet.rescalenet50(multiplier="none").layer1[0].rescale._scale is None
    m = rescalenet.rescalenet18(multiplier="vector", num_classes=3)
    m(torch.randn(2, 3, 32, 32)).sum().backward()
    assert m.layer1[0].rescale._scale.grad.shape == (64,)
    with pytest.raises(ValueError, match="multiplier must be one of"):
        rescalenet.rescalenet50(multiplier="matrix")


def test_configurable_offset_c():
    model = rescalenet.rescalenet50(c=4)
    blocks = _blocks(model)
    assert [b.index for b in blocks] == list(range(4, 20))
    for blk in blocks:
        assert blk.rescale.shortcut_scale**2 + _branch_weight_at_init(blk) ** 2 == pytest.approx(1.0)
    with pytest.raises(ValueError, match="c must be >= 0"):
        rescalenet.rescalenet50(c=-1)
