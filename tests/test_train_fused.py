"""The fused RescaleNet forward (AddBias shifts and residual factors folded into the
convolutions) equals the module-by-module reference, values and gradients."""
import pytest
import torch
from torch import nn

import rescalenet
from rescalenet.fast.shifted_conv import downsample_pool, shifted_conv


def _grads(model, x, fused, seed=3):
    model.set_fused_forward(fused)
    model.zero_grad()
    torch.manual_seed(seed)  # same dropout masks in both runs
    out = model(x)
    (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def _perturb(model):
    """Non-trivial AddBias biases and multipliers, so every folded term matters."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("_bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
            elif name.endswith("_scale"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("name,kw,size", [
    ("rescalenet18", {}, (37, 30)),                   # odd sizes: stride-2 borders
    pytest.param("rescalenet50", {"drop_conv": 0.2, "drop_fc": 0.3}, (33, 32), marks=pytest.mark.slow),
    ("rescalenet18", {"drop_conv": 0.2, "drop_fc": 0.3}, (33, 32)),  # Dropout2d commutes with m_k
    pytest.param("rescalenet18", {"multiplier": "vector"}, (32, 32), marks=pytest.mark.slow),
    pytest.param("rescalenet18", {"multiplier": "none"}, (32, 32), marks=pytest.mark.slow),
    pytest.param("rescalenext50_32x4d", {"multiplier": "vector"}, (40, 40), marks=pytest.mark.slow),
])
def test_fused_forward_and_backward_equal_the_reference(name, kw, size):
    # float64: float32 rounding may flip a near-tie of the max-pool or a ReLU at 0
    model = rescalenet.create_model(name, num_classes=5, **kw).double()
    rescalenet.calibrate(model, [torch.randn(3, 3, *size, dtype=torch.double) + 0.5 for _ in range(8)])
    _perturb(model)
    model.train()
    x = torch.randn(3, 3, *size, dtype=torch.double)
    ref_out, ref_grads = _grads(model, x, fused=False)
    out, grads = _grads(model, x, fused=True)
    torch.testing.assert_close(out, ref_out, rtol=1e-9, atol=1e-10)
    for n in ref_grads:
        torch.testing.assert_close(grads[n], ref_grads[n], rtol=1e-7, atol=1e-9, msg=n)
    model.eval()
    with torch.no_grad():
        model.set_fused_forward(False)
        ref = model(x)
        model.set_fused_forward(True)
        torch.testing.assert_close(model(x), ref, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("name,size", [
    ("rescalenet50", (64, 64)),   # even sizes: 1x1 convs as GEMMs, pooling with the upsampling gradient
    ("rescalenet18", (37, 30)),   # odd sizes: the pooling falls back to AvgPool2d
])
def test_channels_last_fused_forward_equals_the_reference(name, size):
    """The channels-last fast paths (GPU training runs channels-last) compute the
    same function and gradients as the reference forward."""
    model = rescalenet.create_model(name, num_classes=5).double()
    rescalenet.calibrate(model, [torch.randn(2, 3, *size, dtype=torch.double) + 0.5 for _ in range(8)])
    _perturb(model)
    model.train().to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, *size, dtype=torch.double).contiguous(memory_format=torch.channels_last)
    ref_out, ref_grads = _grads(model, x, fused=False)
    out, grads = _grads(model, x, fused=True)
    torch.testing.assert_close(out, ref_out, rtol=1e-9, atol=1e-10)
    for n in ref_grads:
        torch.testing.assert_close(grads[n], ref_grads[n], rtol=1e-7, atol=1e-9, msg=n)


@pytest.mark.parametrize("shape,stride", [((2, 6, 8, 10), 2), ((2, 6, 4, 8, 6), 2)])
def test_downsample_pool_gradient_by_upsampling_is_exact(shape, stride):
    pool = (nn.AvgPool2d if len(shape) == 4 else nn.AvgPool3d)(
        stride, stride, ceil_mode=True, count_include_pad=False)
    fmt = torch.channels_last if len(shape) == 4 else torch.channels_last_3d
    x = torch.randn(*shape, dtype=torch.double).contiguous(memory_format=fmt).requires_grad_()
    out = downsample_pool(pool, x)
    torch.testing.assert_close(out, pool(x))
    g = torch.randn_like(out)
    torch.testing.assert_close(torch.autograd.grad((out * g).sum(), x)[0],
                               torch.autograd.grad((pool(x) * g).sum(), x)[0])


@pytest.mark.parametrize("k,stride,pad,dil,groups,hw", [
    (3, 1, 1, 1, 1, (9, 7)), (3, 2, 1, 1, 4, (9, 8)), (1, 1, 0, 1, 1, (5, 5)),
    (5, 2, 2, 1, 2, (11, 6)), (3, 1, 2, 2, 1, (6, 9)), (7, 2, 3, 1, 1, (3, 3)),
])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_shifted_conv_is_conv_of_the_shifted_input(k, stride, pad, dil, groups, hw, memory_format):
    conv = nn.Conv2d(8, 12, k, stride, pad, dil, groups=groups, bias=False).double()
    x = torch.randn(2, 8, *hw, dtype=torch.double).contiguous(memory_format=memory_format).requires_grad_()
    v = torch.randn(8, dtype=torch.double, requires_grad=True)
    ref = conv(x + v.view(1, -1, 1, 1))
    out = shifted_conv(x, conv.weight, v, conv)
    torch.testing.assert_close(out, ref)
    g = torch.randn_like(ref)
    ga = torch.autograd.grad((ref * g).sum(), (x, v, conv.weight))
    gb = torch.autograd.grad((out * g).sum(), (x, v, conv.weight))
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b)


def test_fused_path_is_skipped_while_calibrating_and_under_hooks():
    model = rescalenet.rescalenet18(num_classes=3)
    x = torch.randn(2, 3, 32, 32)
    blk = model.layer1[0]
    assert not blk.can_fuse()  # AddBias still needs its inputs
    model(x)
    assert int(blk.addbias1.count) == 1
    rescalenet.calibrate(model, [x] * 8)
    assert blk.can_fuse()
    seen = []
    h = blk.addbias2.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    assert not blk.can_fuse()
    model(x)
    assert seen == [(2, 64, 8, 8)]  # a hook on a folded module still fires
    h.remove()
    assert blk.can_fuse()


def test_training_works_after_an_inference_mode_forward():
    """The fused path's cached maps of ones, first made under ``inference_mode``,
    must still be usable by autograd when training resumes."""
    model = rescalenet.rescalenet18(num_classes=3)
    rescalenet.calibrate(model, [torch.randn(2, 3, 24, 24)] * 8)
    model.eval()
    with torch.inference_mode():
        model(torch.randn(2, 3, 24, 24))
    model.train()
    model(torch.randn(2, 3, 24, 24)).sum().backward()
    assert model.layer1[0].conv1.weight.grad is not None


def test_blocks_below_the_size_where_fusing_pays_run_module_by_module(monkeypatch):
    """A speed dispatch only: inputs with fewer than MIN_FUSED_POSITIONS positions per
    channel run the reference path, larger ones the fused path; both give the same output."""
    import rescalenet.fast as fast

    monkeypatch.setattr(fast, "MIN_FUSED_POSITIONS", 32)
    model = rescalenet.create_model("rescalenet_cifar20", num_classes=3, in_chans=1)
    rescalenet.calibrate(model, [torch.randn(2, 1, 28, 28) for _ in range(8)])
    model.eval()
    ran = []
    monkeypatch.setattr(fast, "fused_block_forward",
                        lambda block, x, f=fast.fused_block_forward: ran.append(x.shape[-1]) or f(block, x))
    with torch.no_grad():
        out = model(torch.randn(2, 1, 28, 28))
        assert sorted(set(ran)) == [7, 14, 28]  # 7 x 7 = 49 positions: fused
        ran.clear()
        model(torch.randn(2, 1, 20, 20))  # stages at 20, 10, 5: 5 x 5 = 25 positions run module by module
        assert sorted(set(ran)) == [10, 20]
        model.set_fused_forward(False)
        x = torch.randn(2, 1, 20, 20)
        ref = model(x)
        model.set_fused_forward(True)
        torch.testing.assert_close(model(x), ref, rtol=1e-5, atol=1e-6)
    assert out.shape == (2, 3)
