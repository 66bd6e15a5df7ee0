"""RescaleNet3d: shapes, the rescaling rules in 3D, and exact 2D -> 3D inflation."""
import math

import pytest
import torch
from torch import nn

import rescalenet
from rescalenet import calibrate, is_calibrated
from rescalenet.layers import AddBias
from rescalenet.resnet3d import (
    RescaleNet3d,
    i3d_rescalenet50,
    inflate_from_2d,
    slowonly_rescalenet50,
)


@pytest.fixture(autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


def _blocks(model):
    return [blk for i in range(1, model.num_stages + 1) for blk in getattr(model, f"layer{i}")]


def _kt(conv):
    return conv.weight.shape[2]


@pytest.mark.parametrize(
    "build, clip, out_t",
    [
        (lambda: slowonly_rescalenet50(), (2, 3, 8, 64, 64), 8),
        (lambda: i3d_rescalenet50(), (1, 3, 16, 64, 64), 2),
        (lambda: RescaleNet3d(depth=18, inflate_style="3x3x3"), (2, 3, 8, 32, 32), 4),
    ],
    ids=["slowonly50", "i3d50", "r18-3x3x3"],
)
def test_shapes_and_gradients(build, clip, out_t):
    model = build()
    (out,) = model(torch.randn(clip))
    assert out.shape == (clip[0], model.feat_dim, out_t, clip[3] // 32, clip[4] // 32)
    out.pow(2).mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert not any(isinstance(m, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm))
                   for m in model.modules())


def test_slowonly_and_i3d_layouts_match_mmaction2():
    slow = slowonly_rescalenet50()
    assert slow.conv1.weight.shape == (64, 3, 1, 7, 7)
    # SlowOnly: layer1-2 not inflated, layer3-4 3x1x1 on conv1
    assert [_kt(b.conv1) for b in _blocks(slow)] == [1] * 7 + [3] * 9
    assert all(_kt(b.conv2) == 1 and _kt(b.conv3) == 1 for b in _blocks(slow))
    i3d = i3d_rescalenet50()
    assert i3d.conv1.weight.shape == (64, 3, 5, 7, 7) and i3d.conv1.stride == (2, 2, 2)
    assert [_kt(b.conv1) for b in _blocks(i3d)] == [3, 3, 3, 3, 1, 3, 1, 3, 1, 3, 1, 3, 1, 1, 3, 1]
    r333 = RescaleNet3d(depth=50, inflate_style="3x3x3")
    assert all(_kt(b.conv1) == 1 and _kt(b.conv2) == 3 for b in _blocks(r333))
    # basic blocks inflate both convs, strides on conv1, as MMAction2's BasicBlock3d
    r18 = RescaleNet3d(depth=18, inflate=(0, 1, 0, 0), temporal_strides=(1, 2, 1, 1))
    assert r18.layer2[0].conv1.stride == (2, 2, 2) and _kt(r18.layer2[0].conv2) == 3
    assert isinstance(r18.layer2[0].downsample[0], nn.AvgPool3d)


def test_multiple_outputs_head_and_final_addbias():
    model = RescaleNet3d(depth=18, out_indices=(0, 1, 2, 3), with_pool2=False)
    outs = model(torch.randn(1, 3, 4, 64, 64))
    assert [o.shape[1:3] for o in outs] == [(64, 4), (128, 4), (256, 4), (512, 4)]
    head = RescaleNet3d(depth=18, num_classes=7, drop_fc=0.3)
    assert head(torch.randn(2, 3, 4, 32, 32)).shape == (2, 7)
    # the head's AddBias on the features an external (MMAction2) head pools
    feats = RescaleNet3d(depth=18, with_final_addbias=True)
    feats.train()
    feats(torch.randn(2, 3, 4, 32, 32))
    assert int(feats.final_addbias.count) == 1


def test_rescaling_rules_hold_in_3d():
    model = i3d_rescalenet50()
    blocks = _blocks(model)
    L = len(blocks)
    assert [b.index for b in blocks] == list(range(L - 1, 2 * L - 1))
    for blk in blocks:
        gain = rescalenet.branch_init_gain(blk.index, L, 3)
        beta = blk.rescale.residual_scale * gain**3
        assert blk.rescale.shortcut_scale**2 + beta**2 == pytest.approx(1.0, abs=1e-12)
        for conv in blk.branch_layers():  # He fan-in (temporal taps included) x gain
            fan_in = conv.weight[0].numel()
            assert conv.weight.std().item() == pytest.approx(gain * math.sqrt(2 / fan_in), rel=0.15)
    assert model.no_weight_decay() == {
        n for n, _ in model.named_parameters() if n.endswith(("._bias", "._scale"))
    }


def _stage_second_moments(model, x):
    out = []
    hooks = [b.register_forward_hook(lambda m, i, o: out.append(o.double().pow(2).mean().item()))
             for b in _blocks(model)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    stages, i = [], 0
    for n in model.stage_blocks:
        stages.append(out[i:i + n])
        i += n
    return stages


@pytest.mark.parametrize("build", [slowonly_rescalenet50, i3d_rescalenet50], ids=["slowonly", "i3d"])
def test_per_block_second_moment_is_flat_within_every_stage(build):
    model = build(calibration_steps=2)
    x = torch.randn(2, 3, 8, 32, 32)
    calibrate(model, [x] * 2)
    for stage in _stage_second_moments(model, x):
        assert max(stage) / min(stage) <= 1.5, stage


def _calibrated_2d(depth, num_classes=0, seed=0):
    torch.manual_seed(seed)
    model2d = rescalenet.create_model(f"rescalenet{depth}", num_classes=num_classes)
    with torch.no_grad():  # non-trivial learned state: biases and multipliers away from init
        for name, p in model2d.named_parameters():
            if name.endswith("._bias"):
                p.normal_(0, 0.1)
            elif name.endswith("._scale"):
                p.uniform_(0.5, 1.5)
    calibrate(model2d, [torch.randn(4, 3, 32, 32) for _ in range(8)])
    return model2d.double().eval()


def test_temporal_kernels_of_one_reproduce_2d_frame_by_frame():
    model2d = _calibrated_2d(50)
    model3d = RescaleNet3d(depth=50, conv1_kernel=(1, 7, 7), inflate=0, with_pool2=False,
                           out_indices=(0, 1, 2, 3))
    report = inflate_from_2d(model3d.double(), model2d.state_dict())
    assert all(k.startswith("final_addbias.") for k in report.unused)  # the 2D head's
    assert len(report.inflated) == 1 + 16 * 3 + 4 and not report.missing
    model3d.eval()
    clip = torch.randn(1, 3, 3, 40, 32, dtype=torch.float64)  # any clip: frames differ
    frames = clip.transpose(1, 2).reshape(3, 3, 40, 32)
    with torch.no_grad():
        out3d = model3d(clip)
        out2d = model2d.forward_stages(frames, (0, 1, 2, 3))
    for f3, f2 in zip(out3d, out2d):
        per_frame = f3.transpose(1, 2).reshape(f2.shape)
        torch.testing.assert_close(per_frame, f2, rtol=1e-10, atol=1e-10)


def test_inflated_kernels_reproduce_2d_inside_a_clip_of_identical_frames():
    model2d = _calibrated_2d(18, num_classes=6)
    # I3D-like stem (5x7x7) and every basic block inflated to 3x3x3 convs, without
    # temporal striding: the temporal receptive field of output step t is t +- 18
    model3d = RescaleNet3d(depth=18, conv1_kernel=(5, 7, 7), inflate=1, with_pool2=False,
                           num_classes=6)
    inflate_from_2d(model3d.double(), model2d.state_dict())
    model3d.eval()
    frame = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    clip = frame.unsqueeze(2).expand(1, 3, 40, 32, 32).contiguous()
    with torch.no_grad():
        feats3d = model3d.forward_features(clip)
        feats2d = model2d.forward_features(frame)
        torch.testing.assert_close(feats3d[:, :, 20], feats2d, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(feats3d[:, :, 18:22], feats2d.unsqueeze(2).expand(-1, -1, 4, -1, -1),
                                   rtol=1e-10, atol=1e-10)
        # near the clip's ends zero padding enters: the comparison above is not vacuous
        assert not torch.allclose(feats3d[:, :, 0], feats2d, rtol=1e-3, atol=1e-3)
        # the classifier too: average the interior steps only
        head3d = model3d.fc(model3d.avgpool(model3d.final_addbias(feats3d[:, :, 18:22])).flatten(1))
        torch.testing.assert_close(head3d, model2d(frame), rtol=1e-10, atol=1e-10)


def test_i3d_layout_with_temporal_strides_on_identical_frames():
    model2d = _calibrated_2d(50)
    model3d = i3d_rescalenet50()
    inflate_from_2d(model3d.double(), model2d.state_dict())
    model3d.eval()
    frame = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    # total temporal stride 8; receptive-field radius of an output step < 64 frames
    clip = frame.unsqueeze(2).expand(1, 3, 160, 32, 32).contiguous()
    with torch.no_grad():
        (feats3d,) = model3d(clip)
        feats2d = model2d.forward_features(frame)
    assert feats3d.shape[2] == 20
    torch.testing.assert_close(feats3d[:, :, 10], feats2d, rtol=1e-10, atol=1e-10)


def test_inflation_carries_the_calibrated_addbias_state_over():
    model2d = _calibrated_2d(18).float()
    model3d = RescaleNet3d(depth=18)
    assert not is_calibrated(model3d)
    inflate_from_2d(model3d, model2d.state_dict())
    assert is_calibrated(model3d)
    means2d = {n: m.init_mean.clone() for n, m in model2d.named_modules() if isinstance(m, AddBias)}
    for name, m in model3d.named_modules():
        if isinstance(m, AddBias):
            torch.testing.assert_close(m.init_mean, means2d[name], rtol=0, atol=0)
            torch.testing.assert_close(m._bias, dict(model2d.named_parameters())[name + "._bias"])
    torch.testing.assert_close(model3d.layer3[1].rescale._scale, model2d.layer3[1].rescale._scale)
    model3d.train()
    model3d(torch.randn(2, 3, 4, 32, 32))  # training passes no longer recalibrate
    for name, m in model3d.named_modules():
        if isinstance(m, AddBias):
            assert torch.equal(m.init_mean, means2d[name]) and int(m.count) == 8


def test_inflation_accepts_dataparallel_prefixes_and_legacy_shapes():
    model2d = _calibrated_2d(18).float()
    sd = {"module." + k: (v.reshape(1, -1, 1, 1) if k.endswith("init_mean") else v)
          for k, v in model2d.state_dict().items()}
    model3d = RescaleNet3d(depth=18)
    report = inflate_from_2d(model3d, sd)
    assert not report.missing
    torch.testing.assert_close(model3d.addbias1.init_mean, model2d.addbias1.init_mean)


def test_inflation_rejects_a_network_that_does_not_match():
    sd18 = rescalenet.rescalenet18(num_classes=0).state_dict()
    with pytest.raises(ValueError, match=r"conv1.weight: 2D kernel \(64, 3, 5, 5\) does not match"):
        inflate_from_2d(RescaleNet3d(depth=18), sd18 | {"conv1.weight": torch.zeros(64, 3, 5, 5)})
    with pytest.raises(ValueError, match="fc.weight: 2D shape .* does not match the 3D shape"):
        inflate_from_2d(RescaleNet3d(depth=18, num_classes=7), rescalenet.rescalenet18(num_classes=10).state_dict())
    with pytest.raises(ValueError, match="missing in 2D"):
        inflate_from_2d(RescaleNet3d(depth=34), sd18)
    # three stages: L differs, so the 2D layer4 must not be silently dropped ...
    with pytest.raises(ValueError, match="unused 2D entries"):
        inflate_from_2d(RescaleNet3d(depth=18, num_stages=3, out_indices=(2,)), sd18)
    # ... unless asked for
    report = inflate_from_2d(RescaleNet3d(depth=18, num_stages=3, out_indices=(2,)), sd18, strict=False)
    assert any(k.startswith("layer4.") for k in report.unused)


def test_clear_errors_for_bad_input():
    model = RescaleNet3d(depth=18)
    with pytest.raises(ValueError, match=r"5-D \(N, C, T, H, W\)"):
        model(torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match="5-D"):
        model(torch.randn(1, 2, 3, 4, 32, 32))
    with pytest.raises(ValueError, match="3 input channels, got 8"):
        model(torch.randn(2, 8, 3, 32, 32))  # (N, T, C, H, W) by mistake
    with pytest.raises(ValueError, match="spatial_strides has 3 entries but the network has 4 stages"):
        RescaleNet3d(depth=18, spatial_strides=(1, 2, 2))
    with pytest.raises(ValueError, match="inflate has 3 entries"):
        RescaleNet3d(depth=18, inflate=(0, 1, 1))
    with pytest.raises(ValueError, match="stage_blocks must give 4"):
        RescaleNet3d(depth=18, stage_blocks=(2, 2, 2))
    with pytest.raises(ValueError, match="inflate for stage 2 has 3 entries but the stage has 4 blocks"):
        RescaleNet3d(depth=50, inflate=(1, (1, 0, 1), 1, 1))
    with pytest.raises(ValueError, match="inflate flags must be 0 or 1"):
        RescaleNet3d(depth=18, inflate=(0, (1, 2), 0, 0))
    with pytest.raises(ValueError, match="inflate_style"):
        RescaleNet3d(depth=18, inflate_style="3x3x1")
    with pytest.raises(ValueError, match="conv1_kernel"):
        RescaleNet3d(depth=18, conv1_kernel=(7, 7))
    with pytest.raises(ValueError, match="out_indices"):
        RescaleNet3d(depth=18, num_stages=3, out_indices=(3,))
    with pytest.raises(ValueError, match="unknown RescaleNet3d depth"):
        RescaleNet3d(depth=42)
    with pytest.raises(TypeError, match="RescaleNet3d"):
        inflate_from_2d(rescalenet.rescalenet18(), {})


def test_frozen_stages_and_grad_checkpointing():
    model = RescaleNet3d(depth=18, frozen_stages=1, inflate=0)
    model.train()
    for name, p in model.named_parameters():
        assert p.requires_grad == (name.split(".")[0] not in ("conv1", "addbias1", "layer1")), name
    x = torch.randn(2, 3, 4, 32, 32)
    model(x)
    assert int(model.layer1[0].addbias1.count) == 0 and int(model.layer2[0].addbias1.count) == 1
    ref = RescaleNet3d(depth=18, inflate=(0, 0, 1, 1), with_pool2=False, calibration_steps=1)
    calibrate(ref, [x])
    ref.eval()
    ref(x)[0].sum().backward()
    grads = [p.grad.clone() for p in ref.parameters()]
    ref.zero_grad()
    ref.set_grad_checkpointing()
    ref(x)[0].sum().backward()
    for g, p in zip(grads, ref.parameters()):
        torch.testing.assert_close(p.grad, g)


@pytest.mark.parametrize("kw,memory_format", [
    # basic blocks, 3x3x3 and 1x3x3 convs: padding borders in time and space
    (dict(depth=18, inflate=(1, 0, 1, 1)), torch.contiguous_format),
    # bottlenecks channels-last, as GPU training runs: 1x1x1 convs as GEMMs, the
    # (2, 2, 2) pooling with its upsampling gradient
    (dict(depth=50, inflate=(0, 0, 1, 1)), torch.channels_last_3d),
])
def test_fused_forward_equals_the_module_by_module_forward(kw, memory_format):
    """Once calibrated, AddBias shifts and residual factors are folded into the convs;
    values and gradients must equal the reference forward (padding borders included)."""
    kw = dict(kw, stage_blocks=(1, 1, 1, 1), temporal_strides=(1, 2, 1, 1), num_classes=5, calibration_steps=1)
    model = RescaleNet3d(**kw).double()
    x = torch.randn(2, 3, 8, 32, 32, dtype=torch.float64).contiguous(memory_format=memory_format)
    calibrate(model, [x])
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("._bias"):
                p.normal_(0, 0.1)
            elif name.endswith("._scale"):
                p.uniform_(0.5, 1.5)
    reference = RescaleNet3d(**kw).double()
    reference.load_state_dict(model.state_dict())
    reference.set_fused_forward(False)
    assert all(b.can_fuse() for b in _blocks(model)) and not any(b.can_fuse() for b in _blocks(reference))
    model.train().to(memory_format=memory_format)
    reference.train().to(memory_format=memory_format)
    out, ref = model(x), reference(x)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    out.pow(2).sum().backward()
    ref.pow(2).sum().backward()
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-8, atol=1e-12, msg=name)
    # a hook on a bypassed module switches that block to the reference path
    model.layer2[0].conv1.register_forward_hook(lambda *a: None)
    assert not model.layer2[0].can_fuse() and model.layer1[0].can_fuse()
