"""MMDetection plugin: the RescaleNet backbone, the configs, the optimizer rules,
Pretrained loading and weights_only checkpoint loading (fast, CPU)."""
import math
import os
import pickle

import pytest
import torch

pytest.importorskip("mmdet")
pytest.importorskip("mmcv.ops")  # building detectors imports mmdet.models, which needs compiled ops

import numpy as np  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.optim import build_optim_wrapper  # noqa: E402
from torch import nn  # noqa: E402

import rescalenet  # noqa: E402
from mmdet.registry import MODELS  # noqa: E402
from projects.detection import RescaleNetBackbone  # noqa: E402
from rescalenet import AddBias  # noqa: E402
from rescalenet.rescale import branch_init_gain  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "configs")
NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm,
              nn.modules.instancenorm._InstanceNorm, nn.LocalResponseNorm)


@pytest.fixture(autouse=True)
def _mmdet_scope():
    """Registry lookups in mmdet's scope, whatever an earlier test (test_video) made the
    process-wide default."""
    from mmengine.registry import DefaultScope

    with DefaultScope.overwrite_default_scope("mmdet"):
        yield


def _cfg(name):
    return Config.fromfile(os.path.join(CONFIGS, name))


@pytest.fixture(scope="module")
def rescale50():
    cfg = _cfg("mask_rcnn_rescale50.py")
    return cfg, MODELS.build(cfg.model)


def test_registered_in_mmdet():
    assert MODELS.get("RescaleNetBackbone") is RescaleNetBackbone
    assert issubclass(RescaleNetBackbone, rescalenet.RescaleNet)  # the core network, not a copy


@pytest.mark.parametrize("depth,out_indices", [(18, (0, 1, 2, 3)), (18, (1, 3)), (50, (2,)), (50, (0, 1, 2, 3))])
def test_output_shapes_and_strides(depth, out_indices):
    backbone = MODELS.build(dict(type="RescaleNetBackbone", depth=depth, out_indices=out_indices))
    expansion = 1 if depth < 50 else 4
    h, w = 64, 96
    outs = backbone(torch.randn(2, 3, h, w))
    assert isinstance(outs, tuple) and len(outs) == len(out_indices)
    for out, i in zip(outs, out_indices):
        stride = 4 * 2**i
        assert out.shape == (2, 64 * expansion * 2**i, h // stride, w // stride)


def test_frozen_stages_freeze_stem_and_stages():
    backbone = MODELS.build(dict(type="RescaleNetBackbone", depth=18, frozen_stages=2))
    backbone.train()
    frozen = [backbone.conv1, backbone.addbias1, backbone.layer1, backbone.layer2]
    for m in frozen:
        assert not m.training
        assert all(not p.requires_grad for p in m.parameters())
    for m in (backbone.layer3, backbone.layer4):
        assert m.training and all(p.requires_grad for p in m.parameters())
    outs = backbone(torch.randn(2, 3, 64, 64))
    sum(o.mean() for o in outs).backward()
    assert all(p.grad is None for m in frozen for p in m.parameters())
    assert backbone.layer3[0].conv1.weight.grad is not None
    # frozen AddBias modules never calibrate; the trained ones do
    assert int(backbone.layer2[0].addbias1.count) == 0
    assert int(backbone.layer3[0].addbias1.count) == 1


def test_bad_arguments_give_clear_errors():
    with pytest.raises(KeyError, match="invalid depth 42"):
        MODELS.build(dict(type="RescaleNetBackbone", depth=42))
    with pytest.raises(ValueError, match="out_indices"):
        MODELS.build(dict(type="RescaleNetBackbone", depth=18, out_indices=(4,)))
    with pytest.raises(ValueError, match="needs a 'checkpoint'"):
        MODELS.build(dict(type="RescaleNetBackbone", depth=18, init_cfg=dict(type="Pretrained")))


def test_leftover_resnet_keys_give_clear_error(tmp_path):
    """Swapping the backbone type without ``_delete_=True`` merges the base ResNet's
    keys into the new dict; the error says what to do."""
    cfg_file = tmp_path / "bad.py"
    cfg_file.write_text(
        "_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'\n"
        "custom_imports = dict(imports=['projects.detection'], allow_failed_imports=False)\n"
        "model = dict(backbone=dict(type='RescaleNetBackbone', depth=50))\n")
    cfg = Config.fromfile(str(cfg_file))
    assert "norm_cfg" in cfg.model.backbone
    with pytest.raises(TypeError, match=r"ResNet-only argument\(s\) .*norm_cfg.*_delete_=True"):
        MODELS.build(cfg.model.backbone)


@pytest.mark.parametrize("name,depth", [("mask_rcnn_rescale50.py", 50), ("mask_rcnn_rescale101.py", 101)])
def test_config_backbone_swapped_cleanly(name, depth):
    cfg = _cfg(name)
    backbone = cfg.model.backbone
    assert backbone.type == "RescaleNetBackbone" and backbone.depth == depth
    assert not {"norm_cfg", "norm_eval", "style", "num_stages", "init_cfg"} & set(backbone)
    assert cfg.model.type == "MaskRCNN"
    # the rest is the stock 1x COCO Mask R-CNN
    assert cfg.train_dataloader.dataset.data_root == "data/coco/"
    assert cfg.train_cfg.max_epochs == 12
    assert cfg.optim_wrapper.clip_grad.max_norm == 35


def test_config_builds_normalization_free_mask_rcnn(rescale50):
    from mmdet.models.detectors import MaskRCNN

    _, model = rescale50
    assert isinstance(model, MaskRCNN)
    assert isinstance(model.backbone, RescaleNetBackbone) and model.backbone.depth == 50
    norms = [n for n, m in model.named_modules() if isinstance(m, NORM_TYPES)]
    assert norms == []
    assert sum(isinstance(m, AddBias) for m in model.modules()) > 50


def test_bn_baseline_is_the_same_detector_with_resnet50_bn(rescale50):
    cfg = _cfg("mask_rcnn_r50_bn_baseline.py")
    assert cfg.model.backbone.type == "ResNet" and cfg.model.backbone.norm_eval is False
    assert cfg.optim_wrapper == rescale50[0].optim_wrapper
    assert cfg.param_scheduler == rescale50[0].param_scheduler
    model = MODELS.build(cfg.model)
    norm_names = {n.split(".")[0] for n, m in model.named_modules() if isinstance(m, NORM_TYPES)}
    assert norm_names == {"backbone"}  # the walk finds BN when there is some
    def parts(m):
        return {name: type(child) for name, child in m.named_children() if name != "backbone"}

    assert parts(model) == parts(rescale50[1])


def test_optimizer_no_weight_decay_on_bias_and_multipliers(rescale50):
    cfg, model = rescale50
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    names = {id(p): n for n, p in model.named_parameters()}
    base_wd = cfg.optim_wrapper.optimizer.weight_decay
    seen = 0
    exempt = 0
    for group in wrapper.optimizer.param_groups:
        for p in group["params"]:
            name = names[id(p)]
            seen += 1
            if name.rsplit(".", 1)[-1] in ("_bias", "_scale"):
                exempt += 1
                assert group["weight_decay"] == 0.0, name
            else:
                assert group["weight_decay"] == base_wd, name
    assert seen == sum(1 for _ in model.parameters())
    assert exempt == len(model.backbone.no_weight_decay())
    assert wrapper.clip_grad_kwargs == dict(max_norm=35, norm_type=2)


def test_runner_init_weights_uses_rescalenet_init(rescale50):
    _, model = rescale50
    conv = model.backbone.layer4[2].conv3
    with torch.no_grad():
        conv.weight.zero_()
        model.backbone.layer4[0].addbias1._bias.fill_(1.0)
    model._is_init = False
    model.backbone._is_init = False
    model.init_weights()
    blk = model.backbone.layer4[2]
    gain = branch_init_gain(blk.index, blk.num_blocks, blk.num_branch_layers)
    expected = gain * math.sqrt(2.0 / conv.weight[0].numel())
    assert conv.weight.std().item() == pytest.approx(expected, rel=0.05)
    assert torch.all(model.backbone.layer4[0].addbias1._bias == 0)


def _calibrated_core(depth):
    core = rescalenet.create_model(f"rescalenet{depth}", num_classes=10)
    rescalenet.calibrate(core, (torch.randn(2, 3, 32, 32) for _ in range(8)))
    with torch.no_grad():
        for p in core.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return core


@pytest.mark.parametrize("layout", ["model+module", "state_dict", "bare"])
def test_pretrained_init_cfg_loads_core_checkpoint(tmp_path, layout):
    core = _calibrated_core(18).eval()
    sd = core.state_dict()
    if layout == "model+module":  # the classification trainer's DDP checkpoint
        ckpt = dict(model={f"module.{k}": v for k, v in sd.items()}, epoch=3, best_acc1=0.5)
    elif layout == "state_dict":
        ckpt = dict(state_dict=sd, meta=dict(epoch=3))
    else:
        ckpt = sd
    path = tmp_path / "imagenet.pth"
    torch.save(ckpt, path)
    backbone = MODELS.build(dict(type="RescaleNetBackbone", depth=18,
                                 init_cfg=dict(type="Pretrained", checkpoint=str(path))))
    backbone.init_weights()
    for k, v in backbone.state_dict().items():
        assert torch.equal(v, sd[k]), k
    assert rescalenet.is_calibrated(backbone)  # ImageNet means come along, no recalibration
    backbone.eval()
    x = torch.randn(1, 3, 64, 64)
    for a, b in zip(backbone(x), core.forward_stages(x)):
        torch.testing.assert_close(a, b)


def test_pretrained_checkpoint_of_wrong_depth_raises(tmp_path):
    path = tmp_path / "r34.pth"
    torch.save(dict(model=_calibrated_core(34).state_dict()), path)
    backbone = MODELS.build(dict(type="RescaleNetBackbone", depth=18,
                                 init_cfg=dict(type="Pretrained", checkpoint=str(path))))
    with pytest.raises(RuntimeError, match="does not fit RescaleNetBackbone"):
        backbone.init_weights()
    torch.save(dict(state_dict={"backbone.conv1.weight": torch.zeros(1)}), path)
    with pytest.raises(KeyError, match="prefix='backbone.'"):
        backbone.init_weights()


def test_the_mmengine_loader_survives_a_safe_globals_block_elsewhere(tmp_path):
    """A ``torch.serialization.safe_globals([...])`` block removes its globals from the
    allowlist on exit, even those allowlisted before it; MMEngine's local loader (replaced
    by the plugin) allowlists again before every load."""
    from mmengine.logging import HistoryBuffer, MessageHub
    from mmengine.runner.checkpoint import CheckpointLoader

    hub = MessageHub("test_detection_safe_load_block")
    hub.update_scalar("train/loss", 0.5)
    path = tmp_path / "iter_3.pth"
    torch.save(dict(message_hub=hub.state_dict(), state_dict={"w": torch.ones(2)}), path)
    with torch.serialization.safe_globals([HistoryBuffer]):
        pass
    assert HistoryBuffer not in torch.serialization.get_safe_globals()  # (torch's behaviour)
    loaded = CheckpointLoader.load_checkpoint(str(path), map_location="cpu")  # load_from, --resume, mim test
    assert isinstance(loaded["message_hub"]["log_scalars"]["train/loss"], HistoryBuffer)


def test_safe_globals_load_history_buffers_and_refuse_the_rest(tmp_path):
    from mmengine.logging import HistoryBuffer, MessageHub

    hub = MessageHub("test_detection_safe_load")
    for i in range(3):
        hub.update_scalar("train/loss", 1.0 / (i + 1))
    hub.update_info("eta", np.float64(12.5))
    path = tmp_path / "ckpt.pth"
    torch.save(dict(message_hub=hub.state_dict(), state_dict={"w": torch.ones(2)}), path)
    loaded = torch.load(path, weights_only=True)  # the plugin's import allowlisted the classes
    buf = loaded["message_hub"]["log_scalars"]["train/loss"]
    assert isinstance(buf, HistoryBuffer) and buf.mean() == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)
    assert buf.statistics("max") == 1.0

    class Evil:  # getattr on anything but HistoryBuffer's statistics methods is refused
        def __reduce__(self):
            return getattr, (np.ndarray, "tofile")

    path.write_bytes(b"")
    torch.save({"x": Evil()}, path, pickle_protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="not allowlisted"):
        torch.load(path, weights_only=True)
