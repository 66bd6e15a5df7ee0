"""MMAction2 plugin (fast): the mmaction2 1.2.0 import fix, registry and configs,
checkpoint inflation through ``init_weights``, and the generated clips."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

pytest.importorskip("mmaction")

import projects.video  # noqa: E402,F401  (registers the backbones, applies the drn fix)
from projects.video import RescaleResNet3d, RescaleResNet3dSlowOnly  # noqa: E402
from projects.video import mmaction_compat  # noqa: E402
from projects.video.synthetic_clips import DIRECTIONS, generate, make_clip  # noqa: E402

import rescalenet  # noqa: E402
from rescalenet import calibrate, is_calibrated  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K400 = os.path.join(ROOT, "configs", "slowonly_rescale50_8x8_k400.py")
I3D = os.path.join(ROOT, "configs", "i3d_rescale50_32x2_k400.py")
DEMO = os.path.join(ROOT, "configs", "slowonly_rescale18_synthetic_demo.py")


@pytest.fixture(autouse=True)
def _mmaction_scope():
    """Registry lookups in mmaction's scope, whatever an earlier test made the default."""
    from mmengine.registry import DefaultScope

    with DefaultScope.overwrite_default_scope("mmaction"):
        yield


@pytest.fixture(autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


def _python(code):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_drn_fix_is_needed_applied_and_narrow():
    """The wheel's defect is real, the plugin fixes it, and other import errors still surface."""
    proc = _python("""
        try:
            import mmaction.models
        except ModuleNotFoundError as e:
            print("UNPATCHED:", e.name)
    """)
    assert "UNPATCHED: mmaction.models.localizers.drn" in proc.stdout, proc.stderr[-3000:]
    # with the fix applied, a different missing module still fails the import, by its name
    proc = _python("""
        import sys
        sys.modules["importlib_metadata"] = None  # as if the undeclared dependency were absent
        import projects.video
        import mmaction.models
    """)
    assert proc.returncode != 0 and "importlib_metadata" in proc.stderr, proc.stderr[-2000:]
    assert "localizers.drn" not in proc.stderr
    # this process imported projects.video: mmaction.models imports and builds
    import mmaction.models  # noqa: F401
    from mmaction.models.localizers import DRN
    from mmaction.registry import MODELS

    assert MODELS.get("RescaleResNet3dSlowOnly") is RescaleResNet3dSlowOnly
    assert MODELS.get("Recognizer3D").__name__ == "Recognizer3D"
    with pytest.raises(RuntimeError, match="issue #2714"):
        DRN()


def test_drn_fix_does_nothing_when_mmaction_ships_drn(tmp_path, monkeypatch):
    (tmp_path / "models" / "localizers" / "drn").mkdir(parents=True)
    (tmp_path / "models" / "localizers" / "drn" / "drn.py").write_text("")
    monkeypatch.setattr(mmaction_compat, "_mmaction_dir", lambda: str(tmp_path))
    for name in mmaction_compat.DRN_MODULES:
        monkeypatch.delitem(sys.modules, name, raising=False)
    assert mmaction_compat.patch_missing_drn() is False
    assert not any(name in sys.modules for name in mmaction_compat.DRN_MODULES)


def _build(cfg_path, **overrides):
    from mmengine.config import Config

    from mmaction.registry import MODELS

    cfg = Config.fromfile(cfg_path)
    cfg.model.backbone.update(overrides)
    return cfg, MODELS.build(cfg.model)


@pytest.mark.parametrize("path, backbone_type, clip_len", [(K400, RescaleResNet3dSlowOnly, 8),
                                                           (I3D, RescaleResNet3d, 8)],
                         ids=["slowonly-k400", "i3d-k400"])
def test_configs_build_a_normalization_free_recognizer(path, backbone_type, clip_len):
    from mmengine.optim import build_optim_wrapper

    from mmaction.structures import ActionDataSample

    cfg, model = _build(path)
    assert type(model).__name__ == "Recognizer3D" and type(model.backbone) is backbone_type
    assert model.backbone.final_addbias is not None
    # _delete_ dropped the BN backbone's keys; no norm layer anywhere in the backbone
    assert "norm_cfg" not in cfg.model.backbone and "lateral" not in cfg.model.backbone
    assert not any(isinstance(m, torch.nn.modules.batchnorm._NormBase) for m in model.modules())
    model.init_weights()
    # a training step through the recognizer on a tiny clip batch (N, num_clips, C, T, H, W)
    inputs = torch.randint(0, 255, (2, 1, 3, clip_len, 32, 32)).float()
    samples = [ActionDataSample().set_gt_label(i) for i in (3, 7)]
    data = model.data_preprocessor(dict(inputs=list(inputs), data_samples=samples), training=True)
    losses = model(**data, mode="loss")
    assert torch.isfinite(losses["loss_cls"])
    assert int(model.backbone.addbias1.count) == 1
    # no weight decay on AddBias biases and multipliers, the recipe's 1e-4 elsewhere
    optim = build_optim_wrapper(model, cfg.optim_wrapper)
    decays = {}
    for group in optim.optimizer.param_groups:
        for p in group["params"]:
            decays[id(p)] = group["weight_decay"]
    for name, p in model.named_parameters():
        expected = 0.0 if name.endswith(("._bias", "._scale")) else 1e-4
        assert decays[id(p)] == pytest.approx(expected), name


def test_backbone_returns_a_tensor_for_one_output_and_tuples_otherwise():
    one = RescaleResNet3dSlowOnly(depth=18)
    out = one(torch.randn(1, 3, 4, 32, 32))
    assert isinstance(out, torch.Tensor) and out.shape == (1, 512, 4, 1, 1)
    many = RescaleResNet3dSlowOnly(depth=18, out_indices=(2, 3))(torch.randn(1, 3, 4, 32, 32))
    assert isinstance(many, tuple) and [o.shape[1] for o in many] == [256, 512]


def test_pretrained2d_inflates_a_2d_checkpoint_in_init_weights(tmp_path):
    # a small 2D RescaleNet (one basic block per stage), calibrated, saved as MMEngine does
    model2d = rescalenet.RescaleNet(rescalenet.BasicBlock, (1, 1, 1, 1), num_classes=10)
    calibrate(model2d, [torch.randn(2, 3, 32, 32)] * 8)
    path = str(tmp_path / "rescalenet_2d.pth")
    torch.save({"state_dict": model2d.state_dict(), "meta": {}}, path)
    backbone = RescaleResNet3dSlowOnly(depth=18, stage_blocks=(1, 1, 1, 1), pretrained=path)
    assert not is_calibrated(backbone)
    backbone.init_weights()
    assert is_calibrated(backbone)
    w2d, w3d = model2d.layer4[0].conv1.weight, backbone.layer4[0].conv1.weight
    assert w3d.shape == (512, 256, 3, 3, 3)  # basic block, inflated: 3x3x3
    torch.testing.assert_close(w3d.sum(2), w2d)
    torch.testing.assert_close(backbone.layer2[0].addbias2.init_mean, model2d.layer2[0].addbias2.init_mean)

    # a 3D checkpoint of a whole recognizer, loaded with pretrained2d=False
    path3d = str(tmp_path / "recognizer.pth")
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
                | {"cls_head.fc_cls.weight": torch.zeros(10, 512)}}, path3d)
    again = RescaleResNet3dSlowOnly(depth=18, stage_blocks=(1, 1, 1, 1), pretrained=path3d, pretrained2d=False)
    again.init_weights()
    for (k, a), b in zip(again.state_dict().items(), backbone.state_dict().values()):
        assert torch.equal(a, b), k

    wrong = RescaleResNet3dSlowOnly(depth=18, stage_blocks=(1, 1, 1, 2), pretrained=path)
    with pytest.raises(ValueError, match="missing in 2D: .'layer4.1"):
        wrong.init_weights()


def test_bad_clip_is_rejected_by_the_registered_backbone():
    backbone = RescaleResNet3dSlowOnly(depth=18)
    with pytest.raises(ValueError, match=r"5-D \(N, C, T, H, W\)"):
        backbone(torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match="inflate has 2 entries but the network has 4 stages"):
        RescaleResNet3dSlowOnly(depth=18, inflate=(1, 1))


def test_generated_clips_need_time_to_classify(tmp_path):
    rng = np.random.default_rng(0)
    for label, (dy, dx) in enumerate(DIRECTIONS):
        clip = make_clip(label, rng)
        assert clip.shape == (16, 32, 32, 3) and clip.dtype == np.uint8
        # the square's centre of mass moves along the label's direction
        centres = [np.argwhere(f.min(-1) >= 160).mean(0) for f in clip]
        step = (centres[-1] - centres[0]) / 15
        assert np.allclose(step, (1.5 * dy, 1.5 * dx), atol=0.2), (label, step)
    train_ann, val_ann = generate(str(tmp_path), num_train=16, num_val=8)
    lines = open(train_ann).read().split("\n")[:-1]
    assert len(lines) == 16 and lines[0] == "clip_0000 16 0" and lines[9] == "clip_0009 16 1"
    assert sorted(os.listdir(tmp_path / "val" / "clip_0007")) == [f"img_{i:05d}.jpg" for i in range(1, 17)]

    # the demo config's pipeline reads them as (1, 3, 8, 32, 32) clips
    from mmengine.config import Config

    from mmaction.registry import DATASETS
    from mmaction.utils import register_all_modules

    register_all_modules()
    cfg = Config.fromfile(DEMO)
    cfg.train_dataloader.dataset.update(ann_file=train_ann, data_prefix=dict(img=str(tmp_path / "train")))
    sample = DATASETS.build(cfg.train_dataloader.dataset)[9]
    assert tuple(sample["inputs"].shape) == (1, 3, 8, 32, 32)
    assert int(sample["data_samples"].gt_label) == 1
    with pytest.raises(ValueError, match="label must be in 0..7"):
        make_clip(8, rng)
