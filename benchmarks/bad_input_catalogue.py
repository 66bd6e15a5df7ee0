"""The bad-input catalogue: every wrong option, file or dataset a user can hand to one
of the four training paths, run for real, with the error it gets.

For each case: the exact command (``python -m rescalenet.train``, ``mim train/test
mmdet|mmaction2``, ``fairseq-train/-generate --user-dir ...``) on inputs generated here,
its exit code, the error line it ends with (what ``docs/reliability.md`` quotes), whether
that line contains what the case expects (it must name the input and what to do), and
whether the command wrote a checkpoint (it must not).

    python benchmarks/bad_input_catalogue.py                 # all cases (~10 min on 2 cores)
    python benchmarks/bad_input_catalogue.py --paths train   # one path
    python benchmarks/bad_input_catalogue.py --quick         # the train cases only (~1 min)
    python benchmarks/bad_input_catalogue.py --markdown      # the table of docs/reliability.md

Results: ``OUT/<case>.json`` as each case finishes (finished cases are skipped when the
script is run again; ``--force`` reruns them). CPU budget: one process at a time, one thread.
``tests/test_bad_input.py`` runs the same cases (the fast ones in ``make test``).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import ROOT, machine, table  # noqa: E402
from benchmarks.fault_harness import base_env, error_line, run_command  # noqa: E402

DEFAULT_OUT = os.path.join(ROOT, "runs", "bad_input")
PATHS = ("train", "mmdet", "mmaction2", "fairseq")


@dataclass
class Case:
    name: str          # what is wrong with the input
    path: str          # train / mmdet / mmaction2 / fairseq
    command: Callable[["Inputs"], List[str]]
    expect: str        # what the error line must contain
    slow: bool = False  # an OpenMMLab command line (about 20 s of start-up each)
    # who writes the message: the project (its plugins and trainer), or the framework
    # itself, before any plugin code runs (documented, with what the project cannot change)
    owner: str = "project"


# -- the inputs ---------------------------------------------------------------------------
class Inputs:
    """Generated once under ``root``, good and bad: image folders, checkpoints, COCO and
    rawframe sets, fairseq data directories and a tiny translation checkpoint."""

    def __init__(self, root: str):
        self.root = root

    def at(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    def once(self, name: str, make: Callable[[str], None]) -> str:
        path = self.at(name)
        if not os.path.exists(path + ".done"):
            shutil.rmtree(path, ignore_errors=True)
            os.makedirs(path, exist_ok=True)
            make(path)
            open(path + ".done", "w").close()
        return path

    # image folders ---------------------------------------------------------------------
    def images(self) -> str:
        from rescalenet.data import write_imagefolder

        return self.once("images", lambda p: write_imagefolder(p, num_classes=3, train_per_class=4,
                                                                val_per_class=2, size=32))

    def empty_images(self) -> str:
        return self.once("empty_images", lambda p: [os.makedirs(os.path.join(p, s)) for s in ("train", "val")])

    def mislabelled_images(self) -> str:
        def make(p):
            shutil.copytree(self.images(), p, dirs_exist_ok=True)
            os.rename(os.path.join(p, "val", "square"), os.path.join(p, "val", "squares"))
        return self.once("mislabelled_images", make)

    def corrupt_image(self) -> str:
        def make(p):
            shutil.copytree(self.images(), p, dirs_exist_ok=True)
            with open(os.path.join(p, "train", "circle", "0001.png"), "wb") as f:
                f.write(b"\x89PNG\r\n\x1a\n not really a PNG")
        return self.once("corrupt_image", make)

    # checkpoints -----------------------------------------------------------------------
    def checkpoints(self) -> str:
        import torchvision

        import rescalenet

        def make(p):
            def trainer_format(arch):
                model = rescalenet.create_model(arch, num_classes=3)
                return {"state_dict": model.state_dict(), "arch": arch, "epoch": 1, "step_in_epoch": 0,
                        "optimizer": {}, "scheduler": {"step": 0}}
            torch.save(trainer_format("rescalenet18"), os.path.join(p, "r18.pth"))
            data = open(os.path.join(p, "r18.pth"), "rb").read()
            with open(os.path.join(p, "truncated.pth"), "wb") as f:
                f.write(data[: len(data) // 2])
            with open(os.path.join(p, "corrupted.pth"), "wb") as f:
                f.write(bytes(reversed(data[:4096])) + data[4096:])
            torch.save(trainer_format("rescalenet34"), os.path.join(p, "r34_trainer.pth"))
            torch.save(rescalenet.create_model("rescalenet34", num_classes=3).state_dict(), os.path.join(p, "r34.pth"))
            torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), os.path.join(p, "bn_resnet18.pth"))
        return self.once("checkpoints", make)

    def ckpt(self, name: str) -> str:
        return os.path.join(self.checkpoints(), name)

    # OpenMMLab data ----------------------------------------------------------------------
    def coco(self, missing: bool = False) -> str:
        from projects.detection.synthetic_coco import make_synthetic_coco

        def make(p):
            make_synthetic_coco(p, num_train=4, num_val=2, seed=1)
            if missing:
                for name in ("000001.png", "000003.png"):
                    os.remove(os.path.join(p, "train2017", name))
        return self.once("coco_missing" if missing else "coco", make)

    def clips(self, missing: bool = False) -> str:
        from projects.video.synthetic_clips import generate

        def make(p):
            generate(p, num_train=4, num_val=2, seed=1)
            if missing:
                shutil.rmtree(os.path.join(p, "train", sorted(os.listdir(os.path.join(p, "train")))[0]))
        return self.once("clips_missing" if missing else "clips", make)

    def mm_config(self, name: str, text: str) -> str:
        path = self.at("configs", f"{name}.py")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        return path

    def detector_checkpoint(self, depth: int) -> str:
        """A whole Mask R-CNN checkpoint of the demo config with a RescaleNet-``depth`` backbone."""
        def make(p):
            from mmengine.config import Config
            from mmengine.registry import init_default_scope

            import projects.detection  # noqa: F401
            from mmdet.registry import MODELS
            from projects.detection.demo import DEMO_CONFIG

            init_default_scope("mmdet")
            cfg = Config.fromfile(DEMO_CONFIG)
            cfg.model.backbone.depth = depth
            if depth >= 50:
                cfg.model.neck.in_channels = [256, 512, 1024, 2048]
            torch.save({"state_dict": MODELS.build(cfg.model).state_dict(), "meta": {}},
                       os.path.join(p, "detector.pth"))
        return os.path.join(self.once(f"detector_r{depth}", make), "detector.pth")

    # fairseq ---------------------------------------------------------------------------
    def fairseq_data(self, pair: str = "src-tgt", vocab: int = 24) -> str:
        from projects.translation import toy_task

        src, tgt = pair.split("-")

        def make(p):
            text = os.path.join(p, "text")
            toy_task.write_corpus(text, n_train=200, n_valid=20, n_test=20, vocab_size=vocab)
            for split in ("train", "valid", "test"):
                for side, lang in (("src", src), ("tgt", tgt)):
                    if side != lang:
                        os.rename(os.path.join(text, f"{split}.{side}"), os.path.join(text, f"{split}.{lang}"))
            toy_task.run(toy_task.fairseq_cli("fairseq-preprocess") + [
                "--source-lang", src, "--target-lang", tgt, "--trainpref", f"{text}/train",
                "--validpref", f"{text}/valid", "--testpref", f"{text}/test", "--destdir", os.path.join(p, "bin"),
                "--workers", "1"], env=toy_task.cli_env(1))
        return os.path.join(self.once(f"fairseq_{pair}_v{vocab}", make), "bin")

    def fairseq_checkpoint(self) -> str:
        """A tiny rescale_transformer trained for 3 updates on the src-tgt data."""
        def make(p):
            from projects.translation import toy_task

            toy_task.train(self.fairseq_data(), p, "rescale_transformer", max_update=3)
        return self.once("fairseq_model", make)


# -- the cases ------------------------------------------------------------------------------
def _train(inputs: Inputs, data: str, *extra: str) -> List[str]:
    return [sys.executable, "-m", "rescalenet.train", "--data", data, "--output", inputs.at("work", "train"),
            "--arch", "rescalenet18", "--img-size", "32", "--batch-size", "4", "--workers", "0", "--threads", "1",
            "--epochs", "1", "--warmup-epochs", "0", "--progress", "plain", "--no-tensorboard", *extra]


def _mim(inputs: Inputs, codebase: str, command: str, config: str, options: Dict[str, object],
         extra: Sequence[str] = ()) -> List[str]:
    from projects.mim_cli import mim_command

    return mim_command(codebase, command, config, inputs.at("work", codebase), options, extra)


def _det(inputs: Inputs, options: Dict[str, object], command: str = "train", extra: Sequence[str] = (),
         config: Optional[str] = None, missing: bool = False) -> List[str]:
    from projects.detection.synthetic_coco import data_cfg_options

    return _mim(inputs, "mmdet", command, config or _recommended(inputs, "mmdet"),
                dict(data_cfg_options(inputs.coco(missing)), **options), extra)


def _video(inputs: Inputs, options: Dict[str, object], missing: bool = False) -> List[str]:
    from projects.video.synthetic_clips import data_cfg_options

    return _mim(inputs, "mmaction2", "train", _recommended(inputs, "mmaction2"),
                dict(data_cfg_options(inputs.clips(missing)), **options))


def _recommended(inputs: Inputs, codebase: str) -> str:
    """The demo config with the plugin hooks docs/reliability.md recommends."""
    if codebase == "mmdet":
        from projects.detection.demo import DEMO_CONFIG
    else:
        from projects.video.demo import DEMO_CONFIG
    return inputs.mm_config(f"{codebase}_recommended", "\n".join([
        f"_base_ = [{DEMO_CONFIG!r}]",
        "default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook'))",
        "custom_hooks = [dict(type='ExactResumeHook'), dict(type='DivergenceCheckHook'), "
        "dict(type='DataFilesCheckHook')]",
        "train_cfg = dict(max_epochs=1, val_begin=1000)", ""]))


def _no_delete(inputs: Inputs) -> str:
    return inputs.mm_config("mmdet_without_delete", "\n".join([
        "_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'",
        "custom_imports = dict(imports=['projects.detection'], allow_failed_imports=False)",
        "# replaces the inherited ResNet without _delete_=True: its norm_cfg, style, ... stay",
        "model = dict(backbone=dict(type='RescaleNetBackbone', depth=50))", ""]))


def _fairseq_train(inputs: Inputs, data: str, *extra: str, save_dir: Optional[str] = None) -> List[str]:
    from projects.translation import toy_task

    return toy_task.fairseq_cli("fairseq-train") + [
        data, "--user-dir", toy_task.PLUGIN_DIR, "--cpu", "--arch", "rescale_transformer", *toy_task.TINY_MODEL_ARGS,
        "--optimizer", "adam", "--lr", "1e-3", "--max-tokens", "600", "--max-update", "6",
        "--save-dir", save_dir or inputs.at("work", "fairseq"), "--no-progress-bar", "--num-workers", "0", *extra]


def _fairseq_resume_other_pair(inputs: Inputs) -> List[str]:
    save_dir = inputs.at("work", "fairseq_resume")
    shutil.rmtree(save_dir, ignore_errors=True)
    shutil.copytree(inputs.fairseq_checkpoint(), save_dir)
    return _fairseq_train(inputs, inputs.fairseq_data("src-tgt", vocab=30), save_dir=save_dir)


def _fairseq_generate(inputs: Inputs, data: str, checkpoint: str) -> List[str]:
    from projects.translation import toy_task

    return toy_task.fairseq_cli("fairseq-generate") + [
        data, "--user-dir", toy_task.PLUGIN_DIR, "--cpu", "--path", checkpoint, "--gen-subset", "test",
        "--max-tokens", "600"]


def _truncated_fairseq_checkpoint(inputs: Inputs) -> str:
    model = os.path.join(inputs.fairseq_checkpoint(), "checkpoint_last.pt")
    path = inputs.at("checkpoints", "fairseq_truncated.pt")
    data = open(model, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    return path


CASES: List[Case] = [
    # python -m rescalenet.train
    Case("misspelled option value: --multiplier scaler", "train",
         lambda i: _train(i, i.images(), "--multiplier", "scaler"), "invalid choice: 'scaler'"),
    Case("negative block-index offset: --rescale-c -1", "train",
         lambda i: _train(i, i.images(), "--rescale-c", "-1"), "--rescale-c must be >= 0"),
    Case("unknown depth: --arch rescalenet51", "train",
         lambda i: _train(i, i.images(), "--arch", "rescalenet51"), "--arch 'rescalenet51' is unknown"),
    Case("empty ImageFolder (train/ without class folders)", "train",
         lambda i: _train(i, i.empty_images()), "is not an ImageFolder"),
    Case("mislabelled ImageFolder (val/ classes differ from train/)", "train",
         lambda i: _train(i, i.mislabelled_images()), "have different class folders"),
    Case("corrupt image inside the ImageFolder", "train",
         lambda i: _train(i, i.corrupt_image()), "cannot read the image"),
    Case("truncated checkpoint: --resume", "train",
         lambda i: _train(i, i.images(), "--resume", i.ckpt("truncated.pth")), "truncated or corrupted"),
    Case("corrupted checkpoint: --weights", "train",
         lambda i: _train(i, i.images(), "--weights", i.ckpt("corrupted.pth")), "truncated or corrupted"),
    Case("checkpoint of another architecture: --resume (rescalenet34)", "train",
         lambda i: _train(i, i.images(), "--resume", i.ckpt("r34_trainer.pth")), "holds a 'rescalenet34' model"),
    Case("checkpoint of another depth: --weights (RescaleNet-34 state_dict)", "train",
         lambda i: _train(i, i.images(), "--weights", i.ckpt("r34.pth")), "does not fit --arch rescalenet18"),
    Case("BN-ResNet checkpoint as RescaleNet weights: --weights (torchvision resnet18)", "train",
         lambda i: _train(i, i.images(), "--weights", i.ckpt("bn_resnet18.pth")),
         "holds a network with normalization layers"),
    # mim train / test mmdet
    Case("out-of-range depth: model.backbone.depth=51", "mmdet",
         lambda i: _det(i, {"model.backbone.depth": 51}), "invalid depth 51", slow=True),
    Case("misspelled option value: model.backbone.multiplier=scaler", "mmdet",
         lambda i: _det(i, {"model.backbone.multiplier": "scaler"}), "multiplier must be one of", slow=True),
    Case("negative c: model.backbone.c=-1", "mmdet",
         lambda i: _det(i, {"model.backbone.c": -1}), "c must be >= 0", slow=True),
    Case("config overriding a ResNet backbone without _delete_", "mmdet",
         lambda i: _mim(i, "mmdet", "train", _no_delete(i), {}), "_delete_=True", slow=True),
    Case("truncated checkpoint: mim test --checkpoint", "mmdet",
         lambda i: _det(i, {}, "test", ["--checkpoint", i.ckpt("truncated.pth")]), "truncated or corrupted",
         slow=True),
    Case("checkpoint of another depth: mim test --checkpoint (RescaleNet-34 detector, R-18 config)", "mmdet",
         lambda i: _det(i, {}, "test", ["--checkpoint", i.detector_checkpoint(34)]), "do not fit RescaleNetBackbone",
         slow=True),
    Case("BN-ResNet checkpoint as the backbone's init_cfg Pretrained", "mmdet",
         lambda i: _det(i, {"model.backbone.init_cfg.type": "Pretrained",
                            "model.backbone.init_cfg.checkpoint": i.ckpt("bn_resnet18.pth")}),
         "holds a network with normalization layers", slow=True),
    Case("COCO annotation file pointing at missing images", "mmdet",
         lambda i: _det(i, {}, missing=True), "point at files that do not exist", slow=True),
    # mim train mmaction2
    Case("out-of-range depth: model.backbone.depth=51", "mmaction2",
         lambda i: _video(i, {"model.backbone.depth": 51}), "depth 51", slow=True),
    Case("annotation list pointing at missing frame folders", "mmaction2",
         lambda i: _video(i, {}, missing=True), "point at files that do not exist", slow=True),
    # fairseq
    Case("misspelled option value: --rescale-multiplier scaler", "fairseq",
         lambda i: _fairseq_train(i, i.fairseq_data(), "--rescale-multiplier", "scaler"),
         "invalid choice: 'scaler'"),
    Case("negative c: --rescale-c -1", "fairseq",
         lambda i: _fairseq_train(i, i.fairseq_data(), "--rescale-c", "-1"), "--rescale-c must be >= 0"),
    Case("data directory of another language pair: fairseq-train --source-lang src on a de-en directory",
         "fairseq", lambda i: _fairseq_train(i, i.fairseq_data("de-en"), "--source-lang", "src", "--target-lang",
                                             "tgt"), "dict.src.txt", owner="fairseq"),
    Case("resuming in a save dir trained with other dictionaries", "fairseq",
         _fairseq_resume_other_pair, "binarized with other dictionaries"),
    Case("fairseq-generate with the data directory of another language pair", "fairseq",
         lambda i: _fairseq_generate(i, i.fairseq_data("src-tgt", vocab=30),
                                     os.path.join(i.fairseq_checkpoint(), "checkpoint_last.pt")),
         "binarized with other dictionaries"),
    Case("truncated checkpoint: fairseq-generate --path", "fairseq",
         lambda i: _fairseq_generate(i, i.fairseq_data(), _truncated_fairseq_checkpoint(i)), "is truncated or corrupt"),
]


# -- running -------------------------------------------------------------------------------
def _slug(case: Case) -> str:
    keep = "".join(c if c.isalnum() else "-" for c in f"{case.path}-{case.name}".lower())
    return "-".join(filter(None, keep.split("-")))[:80]


def _checkpoints(folder: str) -> List[str]:
    found = []
    for dirpath, _dirs, files in os.walk(folder):
        found += [os.path.join(dirpath, f) for f in files if f.endswith((".pth", ".pt"))]
    return sorted(found)


def run_case(case: Case, inputs: Inputs) -> Dict:
    work = inputs.at("work")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    command = case.command(inputs)
    before = set(_checkpoints(work))
    rc, output, _ = run_command(command, os.path.join(inputs.root, "last_case.log"), base_env())
    line = error_line(output)
    written = sorted(set(_checkpoints(work)) - before)
    return dict(name=case.name, path=case.path, owner=case.owner,
                command=" ".join(command[1:] if command[0] == sys.executable else command),
                exit_code=rc, error=line, expected=case.expect, clear=rc != 0 and case.expect in line,
                checkpoints_written=[os.path.relpath(p, work) for p in written],
                traceback="Traceback (most recent call last)" in output)


def run_cases(cases: Sequence[Case], out: str, force: bool = False) -> List[Dict]:
    inputs = Inputs(os.path.join(out, "inputs"))
    results = []
    for case in cases:
        path = os.path.join(out, _slug(case) + ".json")
        if os.path.exists(path) and not force:
            with open(path) as f:
                results.append(json.load(f))
            continue
        print(f"[{case.path}] {case.name}", flush=True)
        result = run_case(case, inputs)
        with open(path, "w") as f:
            json.dump(result, f, indent=1)
        print(f"    -> {'clear' if result['clear'] else 'NOT CLEAR'}: {result['error'][:200]}", flush=True)
        results.append(result)
    return results


def markdown(results: Sequence[Dict]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    rows = [[r["path"], cell(r["name"]), f"`{cell(r['error'])}`", r.get("owner", "project"),
             ("yes" if r["clear"] else "**no**"), ", ".join(r["checkpoints_written"]) or "none"] for r in results]
    return table(["path", "bad input", "the error it ends with", "message from", "expected text found",
                  "checkpoints written"], rows)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=PATHS)
    parser.add_argument("--out", default=DEFAULT_OUT)
    parser.add_argument("--quick", action="store_true", help="the train cases only, in OUT/quick")
    parser.add_argument("--force", action="store_true", help="rerun finished cases")
    parser.add_argument("--markdown", action="store_true", help="print the markdown table of finished cases")
    args = parser.parse_args(argv)
    if args.quick:
        args.paths, args.out = ["train"], os.path.join(args.out, "quick")
    cases = [c for c in CASES if c.path in args.paths]
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)
    if not args.markdown:
        print(f"bad-input catalogue on {machine()}", flush=True)
    results = run_cases(cases, args.out, args.force) if not args.markdown else [
        json.load(open(os.path.join(args.out, _slug(c) + ".json"))) for c in cases
        if os.path.exists(os.path.join(args.out, _slug(c) + ".json"))]
    print(markdown(results))
    unclear = [r for r in results if not r["clear"] or r["checkpoints_written"]]
    if not args.markdown:
        print(f"\n{len(results)} cases, {len(results) - len(unclear)} with a clear error and nothing written")


if __name__ == "__main__":
    main()
