"""Every checkpoint the project reads, or tells users to read, loads with
``torch.load(weights_only=True)``: the code is searched for ``torch.load`` calls, and
every loader is run on a checkpoint that would run code if it were unpickled freely
(``os.makedirs`` of a marker folder): each one refuses it, and the marker never appears.

Where a framework calls ``torch.load`` itself (MMEngine's stock ``load_from_local``,
fairseq's ``load_checkpoint_to_cpu``) it passes no ``weights_only``: torch >= 2.6 then
defaults to ``True``, which the tests below check on the pinned torch, and which
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` would turn off (the project never sets it)."""
import ast
import os
import sys

import pytest
import torch

import rescalenet
from rescalenet.checkpoint import CheckpointError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CODE = [os.path.join(ROOT, "hubconf.py")] + [
    os.path.join(dirpath, f) for top in ("rescalenet", "projects", "benchmarks")
    for dirpath, _dirs, files in os.walk(os.path.join(ROOT, top)) for f in files if f.endswith(".py")]


def _torch_load_calls(path):
    tree = ast.parse(open(path).read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load" \
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch":
            yield node


def test_every_torch_load_in_the_code_passes_weights_only_true():
    calls, unsafe = 0, []
    for path in CODE:
        for call in _torch_load_calls(path):
            calls += 1
            kw = {k.arg: k.value for k in call.keywords}
            if not (isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True):
                unsafe.append(f"{os.path.relpath(path, ROOT)}:{call.lineno}")
    assert calls >= 5 and not unsafe, unsafe


def test_the_code_never_turns_safe_loading_off():
    offenders = []
    for path in CODE + [os.path.join(ROOT, "Makefile")]:
        text = open(path).read()
        for i, line in enumerate(text.splitlines(), 1):
            code = line.split("#")[0]
            if "weights_only=False" in code or ("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD" in code and (
                    "=1" in code.replace(" ", "") or "setdefault" in code or "export" in code)):
                offenders.append(f"{os.path.relpath(path, ROOT)}:{i}: {line.strip()}")
    assert not offenders, offenders
    assert os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD") is None


class _RunsCode:
    """Unpickled freely, this creates ``marker`` (a harmless stand-in for any code)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


@pytest.fixture
def hostile(tmp_path):
    """Checkpoints in each layout the loaders expect, each with a code-running object."""
    marker = str(tmp_path / "code_ran")
    model = rescalenet.rescalenet18(num_classes=3)
    payload = _RunsCode(marker)
    paths = {}
    for name, obj in {
        "bare": dict(model.state_dict(), extra=payload),
        "trainer": {"state_dict": model.state_dict(), "arch": "rescalenet18", "extra": payload},
        "mmengine": {"state_dict": model.state_dict(), "meta": {"extra": payload}},
        "fairseq": {"model": model.state_dict(), "cfg": {"extra": payload}, "optimizer_history": [{}]},
    }.items():
        paths[name] = str(tmp_path / f"{name}.pth")
        torch.save(obj, paths[name])
    yield paths
    assert not os.path.exists(marker), "a checkpoint loader unpickled arbitrary code"


def test_core_reader_hub_and_trainer_refuse(hostile, tmp_path):
    with pytest.raises(CheckpointError, match="weights_only=True"):
        rescalenet.read_checkpoint(hostile["bare"])
    sys.path.insert(0, ROOT)
    import hubconf

    with pytest.raises(CheckpointError):
        hubconf.rescalenet18(checkpoint=hostile["bare"])
    from rescalenet import train
    from rescalenet.training import load_training_checkpoint

    with pytest.raises(SystemExit, match="weights_only=True"):
        load_training_checkpoint(hostile["trainer"])  # --resume, --weights, diagnostics --checkpoint
    from rescalenet.data import write_imagefolder

    data = write_imagefolder(str(tmp_path / "img"), num_classes=3, train_per_class=1,
                                             val_per_class=1, size=16)
    with pytest.raises(SystemExit, match="weights_only=True"):
        train.main(["--data", data, "--output", str(tmp_path / "out"), "--arch", "rescalenet18", "--batch-size",
                    "1", "--workers", "0", "--weights", hostile["trainer"]])


def test_timm_pretrained_file_refuses(hostile):
    timm = pytest.importorskip("timm")
    import rescalenet.timm  # noqa: F401

    with pytest.raises(Exception, match="(?i)weights.only|unsupported global"):
        timm.create_model("rescalenet18", pretrained=True, pretrained_cfg_overlay=dict(file=hostile["bare"]))


def test_mmengine_loaders_refuse(hostile):
    pytest.importorskip("mmengine")
    from mmengine.runner.checkpoint import CheckpointLoader, load_from_local

    from projects.safe_load import register_mmengine_safe_globals, register_safe_local_loader

    register_mmengine_safe_globals()
    # MMEngine's own loader (no weights_only: torch's default protects it) ...
    with pytest.raises(Exception, match="(?i)unsupported global"):
        load_from_local(hostile["mmengine"], map_location="cpu")
    # ... and the plugins' (load_from, --resume, mim test --checkpoint, init_cfg Pretrained)
    register_safe_local_loader()
    with pytest.raises(CheckpointError, match="weights_only=True"):
        CheckpointLoader.load_checkpoint(hostile["mmengine"], map_location="cpu")


def test_detection_and_video_backbones_refuse(hostile):
    pytest.importorskip("mmdet")
    pytest.importorskip("mmaction")
    from projects.detection import RescaleNetBackbone
    from projects.video import RescaleResNet3d

    with pytest.raises(CheckpointError):
        RescaleNetBackbone(depth=18).load_pretrained(hostile["mmengine"])
    with pytest.raises(CheckpointError):
        RescaleResNet3d(depth=18, pretrained=hostile["bare"]).init_weights()


def test_fairseq_loaders_refuse(hostile):
    pytest.importorskip("fairseq")
    from fairseq import checkpoint_utils

    from projects.translation.toy_task import load_plugin

    import importlib

    load_plugin()  # (its allowlist: argparse.Namespace only)
    average_checkpoints = importlib.import_module("rescale_fairseq.average_checkpoints").average_checkpoints

    with pytest.raises(Exception, match="(?i)unsupported global"):
        checkpoint_utils.load_checkpoint_to_cpu(hostile["fairseq"])  # fairseq-generate, --restore-file
    with pytest.raises(Exception, match="(?i)unsupported global"):
        average_checkpoints([hostile["fairseq"]])


def test_fault_harness_reads_checkpoints_safely(hostile, tmp_path):
    from benchmarks.fault_harness import unloadable

    assert [x.split(" ")[0] for x in unloadable(str(tmp_path))] == ["bare.pth", "fairseq.pth", "mmengine.pth",
                                                                     "trainer.pth"]
