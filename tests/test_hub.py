"""torch.hub: every builder loads from the local repository, with a local checkpoint."""
import ast
import os

import pytest
import torch

import rescalenet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


pytestmark = pytest.mark.usefixtures("one_thread")


def test_hubconf_exposes_every_builder_and_only_torch():
    # the entry points are generated from the registry; this is what torch.hub.list lists
    hub = torch.hub._import_module("hubconf", os.path.join(ROOT, "hubconf.py"))
    public = {f for f in dir(hub) if callable(getattr(hub, f)) and not f.startswith("_")}
    assert public == set(rescalenet.MODEL_BUILDERS) == set(rescalenet.list_models(kind="2d"))
    tree = ast.parse(open(os.path.join(ROOT, "hubconf.py")).read())
    deps = [n for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "dependencies"]
    assert ast.literal_eval(deps[0].value) == ["torch"]


@pytest.mark.parametrize("name", ["rescalenet18", "rescalenext50_32x4d"])
def test_hub_load_builds_the_model(name):
    model = torch.hub.load(ROOT, name, source="local", num_classes=3, drop_fc=0.2)
    assert isinstance(model, rescalenet.RescaleNet) and model.dropout.p == 0.2
    ref = rescalenet.create_model(name, num_classes=3)
    assert model.state_dict().keys() == ref.state_dict().keys()
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)


def test_hub_load_with_a_checkpoint(tmp_path):
    trained = rescalenet.rescalenet18(num_classes=4)
    rescalenet.calibrate(trained, [torch.randn(2, 3, 32, 32) for _ in range(8)])
    trained.eval()
    path = tmp_path / "ckpt.pth"
    # DataParallel-style prefixes under a 'state_dict' key, as training scripts save
    torch.save({"state_dict": {"module." + k: v for k, v in trained.state_dict().items()}}, path)
    model = torch.hub.load(ROOT, "rescalenet18", source="local", num_classes=4, checkpoint=str(path))
    assert rescalenet.is_calibrated(model)
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        assert torch.allclose(trained(x), model.eval()(x), atol=1e-6)
    with pytest.raises(RuntimeError, match="size mismatch"):
        torch.hub.load(ROOT, "rescalenet18", source="local", num_classes=5, checkpoint=str(path))
    with pytest.raises(ValueError, match="no pretrained weights"):
        torch.hub.load(ROOT, "rescalenet50", source="local", pretrained=True)
