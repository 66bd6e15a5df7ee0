"""RescaleNet: normalization-free residual networks (NeurIPS 2020), with MMDetection,
MMAction2 and Fairseq plugins. ``pip install -e .`` needs torch alone; the extras
pull the frameworks (``make setup`` installs the whole pinned stack, see README)."""
from setuptools import find_packages, setup

MM = ["mmengine==0.10.7", "mmcv==2.1.0"]  # mmcv 2.1.0: sdist, compiled with its C++ ops
EXTRAS = {
    "detection": MM + ["mmdet==3.3.0"],
    "video": MM + ["mmaction2==1.2.0", "decord==0.6.0", "importlib-metadata"],
    "translation": ["fairseq-fixed==0.12.3.1"],
    "timm": ["timm"],
    "train": ["tensorboard", "matplotlib"],
}
EXTRAS["all"] = sorted({r for reqs in EXTRAS.values() for r in reqs})

setup(
    name="rescalenet",
    version="0.1.0",
    description="RescaleNet: deep residual networks without normalization layers",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["rescalenet", "rescalenet.*", "projects", "projects.*"]),
    install_requires=["torch>=2.0"],
    extras_require=EXTRAS,
    license="Apache-2.0",
)
