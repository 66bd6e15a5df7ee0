"""fold_for_inference: an eval-only copy with AddBias and multipliers folded, equal outputs."""
import pytest
import torch
from torch import nn

import rescalenet
from rescalenet import AddBias, RescaledResidual
from rescalenet.fold import ChannelShift, FoldedBlock, FoldedRescaleNet, fold_for_inference


pytestmark = pytest.mark.usefixtures("one_thread")


def _trained_like(name, **kwargs):
    """A calibrated model whose AddBias biases and multipliers are far from their init,
    as after training, so that every folded term matters."""
    model = rescalenet.create_model(name, **kwargs)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("._bias"):
                p.normal_(0.0, 0.5)
            elif n.endswith("._scale"):
                p.uniform_(0.5, 1.5)
    rescalenet.calibrate(model, [torch.randn(2, 3, 32, 32) for _ in range(8)])
    return model.eval()


def _close(a, b, tol=1e-5):
    scale = a.abs().max().clamp_min(1e-6)
    return ((a - b).abs().max() / scale).item() < tol


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("rescalenet18", {}),  # basic blocks: input shift kept before the padded 3x3 conv
        ("rescalenet50", dict(drop_conv=0.1, drop_fc=0.3)),  # dropout is the identity in eval
        ("rescalenext50_32x4d", dict(multiplier="vector", num_classes=10)),  # grouped 3x3, per-channel m
        ("rescalenet34", dict(multiplier="none", num_classes=0)),  # pooled features, no classifier
    ],
)
def test_folded_model_equals_original(name, kwargs):
    model = _trained_like(name, **kwargs)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_for_inference(model)
    # odd sizes: ceil-mode shortcut pooling and every border of the padded convs
    x = torch.randn(2, 3, 67, 45)
    with torch.no_grad():
        ref, out = model(x), folded(x)
        assert out.shape == ref.shape
        assert _close(ref, out)
        assert _close(model.forward_head(model.forward_features(x), pre_logits=True),
                      folded.forward_head(folded.forward_features(x), pre_logits=True))
    # the original is untouched and still trainable
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    model.train()
    # nothing of the training-time machinery is left
    kinds = {type(m) for m in folded.modules()}
    assert not kinds & {AddBias, RescaledResidual, nn.Dropout, nn.Dropout2d}
    assert isinstance(folded, FoldedRescaleNet)
    blocks = [m for m in folded.modules() if isinstance(m, FoldedBlock)]
    assert len(blocks) == sum(model.layers)
    basic = not hasattr(model.layer1[0], "conv3")
    # only a basic block's input shift (shared with the shortcut) stays a separate add
    assert all((b.in_shift is not None) == basic for b in blocks)
    assert not any(isinstance(m, ChannelShift) for m in folded.modules())
    assert not any(p.requires_grad for p in folded.parameters())


def test_folded_feature_extractor_equals_original():
    model = _trained_like("rescalenet50", out_indices=(0, 1, 2, 3))
    folded = fold_for_inference(model)
    x = torch.randn(1, 3, 70, 52)
    with torch.no_grad():
        ref, out = model(x), folded(x)
    assert isinstance(out, tuple) and len(out) == 4
    for r, o in zip(ref, out):
        assert r.shape == o.shape and _close(r, o)
    # a RescaleNet inside another module (a detector's backbone) is folded in place
    holder = fold_for_inference(nn.ModuleDict(dict(backbone=model, neck=nn.Conv2d(2048, 8, 1))))
    assert isinstance(holder.backbone, FoldedRescaleNet) and isinstance(holder.neck, nn.Conv2d)
    with torch.no_grad():
        assert all(_close(r, o) for r, o in zip(ref, holder.backbone(x)))


def test_fold_refuses_an_uncalibrated_model():
    model = rescalenet.rescalenet18(num_classes=4).eval()
    with pytest.raises(ValueError, match="not calibrated.*calibrate"):
        fold_for_inference(model)
    # explicitly allowed: folds what eval mode computes now (warm-up biases, zero means)
    folded = fold_for_inference(model, allow_uncalibrated=True)
    x = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        assert _close(model(x), folded(x))
    with pytest.raises(ValueError, match="no AddBias"):
        fold_for_inference(nn.Sequential(nn.Conv2d(3, 3, 1)))


def test_folded_model_is_eval_only():
    folded = fold_for_inference(_trained_like("rescalenet18", num_classes=3))
    with pytest.raises(RuntimeError, match="eval-only"):
        folded.train()
    folded.eval()  # fine
    with pytest.raises(ValueError, match="input"):
        folded(torch.randn(1, 1, 32, 32))


def test_fold_keeps_channels_last_and_dtype():
    model = _trained_like("rescalenet18", num_classes=5).to(memory_format=torch.channels_last)
    folded = fold_for_inference(model)
    x = torch.randn(2, 3, 64, 48).to(memory_format=torch.channels_last)
    with torch.no_grad():
        assert _close(model(x), folded(x))
    conv = folded.layer1[0].convs[0]
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    double = fold_for_inference(_trained_like("rescalenet18", num_classes=5).double())
    assert double.fc.weight.dtype == torch.float64


def test_export_and_trace_folded_and_unfolded():
    """torch.export of both models (the folded one with a dynamic batch size) and
    TorchScript tracing of the folded one."""
    model = _trained_like("rescalenet18", num_classes=6)
    folded = fold_for_inference(model)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
    assert _close(ref, torch.export.export(model, (x,)).module()(x))
    batch = torch.export.Dim("batch", min=1, max=64)
    exported = torch.export.export(folded, (x,), dynamic_shapes=({0: batch},)).module()
    assert _close(ref, exported(x))
    x3 = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        assert _close(folded(x3), exported(x3))
    traced = torch.jit.trace(folded, x, check_trace=False)
    with torch.no_grad():
        assert _close(ref, traced(x))


@pytest.mark.slow
def test_torch_compile_folded_and_unfolded():
    model = _trained_like("rescalenet18", num_classes=6)
    folded = fold_for_inference(model)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        for m in (model, folded):
            assert _close(ref, torch.compile(m)(x), tol=1e-4)
