"""Fault injection: kill every training path at chosen moments, resume it with the
framework's own mechanism, and compare with the uninterrupted run.

Paths (each on data it generates, with a tiny RescaleNet-18 / 2+2-layer Transformer):

* ``train``: ``python -m rescalenet.train`` (``--save-every-steps``, ``--resume auto``);
* ``mmdet``: ``mim train mmdet`` Mask R-CNN (``checkpoint=dict(by_epoch=False, interval=K)``,
  ``--resume``), with the plugin's hooks (``projects/mmengine_hooks.py``);
* ``mmaction2``: ``mim train mmaction2`` SlowOnly, likewise;
* ``fairseq``: ``fairseq-train --user-dir ... --arch rescale_transformer``
  (``--save-interval-updates K``; restarting the command resumes from ``checkpoint_last.pt``);
* ``mmdet-stock``: the ``mmdet`` runs with MMEngine's own ``CheckpointHook`` and no plugin
  hook, to show what the hooks fix; ``fairseq-default``: the ``fairseq`` runs without
  ``--update-epoch-batch-itr True``.

Kill points (SIGKILL, injected by ``benchmarks/fault_injection/sitecustomize.py``):

* ``mid-calibration``: after training step 5 of the 8 AddBias calibration steps; the
  last checkpoint is the one of step 3;
* ``mid-epoch``: after step 11 (fairseq: 13), in the middle of an epoch, calibration
  done; last checkpoint: step 9 (12);
* ``in-write``: in the middle of writing the checkpoint after step 15 (``train``,
  ``fairseq``: the copy to ``checkpoint_last.pt``) or step 9 (``mm*``).

For every (path, kill point): the killed run, then the same command resumed, trained to
the end; the final weights against the uninterrupted run's: AddBias means and counts
(must be equal: a calibration under way goes on where it stopped), every other tensor
(bitwise where the framework is deterministic on the CPU, else the largest difference);
and every checkpoint file left must load with ``torch.load(weights_only=True)``.

    python benchmarks/fault_harness.py                   # the whole table (~30 min on 2 cores)
    python benchmarks/fault_harness.py --paths train     # one path
    python benchmarks/fault_harness.py --quick           # train x mid-calibration only (~1 min)

Each (path, kill point) writes ``OUT/<path>/<point>.json`` as soon as it is done and is
skipped when the script is run again (``--force`` reruns); ``--table`` prints the table of
what is done. CPU budget: one process, one thread (``OMP_NUM_THREADS=1``).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import ROOT, machine, table  # noqa: E402

INJECTOR = os.path.join(ROOT, "benchmarks", "fault_injection")
KILL_POINTS = ("mid-calibration", "mid-epoch", "in-write")
DEFAULT_OUT = os.path.join(ROOT, "runs", "fault_harness")
CALIBRATION_KEYS = (".init_mean", ".count")


# -- running a command, killed or not ------------------------------------------------
def base_env(extra_path: Sequence[str] = ()) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("FAULT_INJECT", "FAULT_INJECT_LOG", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([*extra_path, *filter(None, [os.environ.get("PYTHONPATH")]), ROOT])
    return env


def run_command(cmd: Sequence[str], log: str, env: Dict[str, str], inject: str = "") -> Tuple[int, str, str]:
    """Run ``cmd`` from the repository root, output to ``log``. With ``inject`` (a
    ``FAULT_INJECT`` spec) the injector is armed; returns (exit code, output, what the
    injector says it did)."""
    env = dict(env)
    kill_log = log + ".kill"
    if os.path.exists(kill_log):
        os.remove(kill_log)
    if inject:
        env.update(FAULT_INJECT=inject, FAULT_INJECT_LOG=kill_log,
                   PYTHONPATH=INJECTOR + os.pathsep + env["PYTHONPATH"])
    with open(log, "w") as f:
        proc = subprocess.run(list(cmd), stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    with open(log) as f:
        output = f.read()
    killed = open(kill_log).read().strip() if os.path.exists(kill_log) else ""
    return proc.returncode, output, killed


# -- reading what a run left ---------------------------------------------------------
def register_safe_globals() -> None:
    """The allowlists the plugins register, so their checkpoints load with weights_only=True
    (again at every load: see ``rescalenet.checkpoint.allow_globals``)."""
    from projects.safe_load import register_mmengine_safe_globals

    register_mmengine_safe_globals()
    try:
        from projects.translation import toy_task
    except ImportError:  # fairseq not installed
        return
    toy_task.load_plugin().safe_globals.register_fairseq_safe_globals()


def load_weights_only(path: str):
    """``torch.load(path, weights_only=True)`` with the plugins' allowlists."""
    register_safe_globals()
    return torch.load(path, map_location="cpu", weights_only=True)


def unloadable(folder: str) -> List[str]:
    """The checkpoint files under ``folder`` that ``torch.load(weights_only=True)`` cannot read."""
    bad = []
    for path in sorted(glob.glob(os.path.join(folder, "**", "*.pt*"), recursive=True)):
        if not path.endswith((".pt", ".pth")):
            continue
        try:
            load_weights_only(path)
        except Exception as e:  # truncated, corrupt, not allowlisted
            bad.append(f"{os.path.relpath(path, folder)} ({type(e).__name__})")
    return bad


def leftovers(folder: str) -> List[str]:
    return sorted(os.path.relpath(p, folder) for p in glob.glob(os.path.join(folder, "**", "*.tmp"), recursive=True))


def compare(reference: Dict[str, torch.Tensor], other: Dict[str, torch.Tensor]) -> Dict:
    """Calibration state and weights of two final models."""
    if reference.keys() != other.keys():
        return dict(same_keys=False, identical=False)
    calib = [k for k in reference if k.endswith(CALIBRATION_KEYS)]
    counts_equal = all(torch.equal(reference[k], other[k]) for k in calib if k.endswith(".count"))
    means = [(reference[k] - other[k]).abs().max().item() for k in calib if k.endswith(".init_mean")]
    weights = [(reference[k].double() - other[k].double()).abs().max().item()
               for k in reference if reference[k].is_floating_point() and not k.endswith(CALIBRATION_KEYS)
               and reference[k].numel()]
    return dict(
        same_keys=True,
        counts_equal=counts_equal,
        counts=sorted({int(reference[k]) for k in calib if k.endswith(".count")}),
        max_mean_diff=max(means, default=0.0),
        max_weight_diff=max(weights, default=0.0),
        identical=all(torch.equal(reference[k], other[k]) for k in reference),
    )


# -- the paths ---------------------------------------------------------------------------
@dataclass
class Path:
    """One training path: how to prepare its data, run it, kill it and read its result."""

    name: str
    prepare: Callable[[str], None]               # data root -> generated data
    command: Callable[..., List[str]]            # (data root, work dir, resume, lr=None) -> command
    final_state: Callable[[str], Dict[str, torch.Tensor]]  # work dir -> final model state
    resumed_from: Callable[[str], str]           # resumed run's log -> where it resumed from
    kills: Dict[str, str]                        # kill point -> FAULT_INJECT spec
    diverging_lr: float = 0.0                    # a learning rate that blows the loss up
    # (data root, work dir, log of a refused resume) -> the documented workaround's command
    after_refusal: Optional[Callable[[str, str, str], Optional[List[str]]]] = None
    env_path: List[str] = field(default_factory=list)


def _calibration_counts(state: Dict[str, torch.Tensor]) -> List[int]:
    return sorted({int(v) for k, v in state.items() if k.endswith(".count")})


# python -m rescalenet.train: 24 images, batch 4: 6 steps per epoch, 3 epochs, a checkpoint
# every 3 steps (and at every epoch end); dropout on, so the random states matter.
def _train_prepare(root: str) -> None:
    from rescalenet.data import write_imagefolder

    write_imagefolder(root, num_classes=3, train_per_class=8, val_per_class=2, size=32, seed=0)


def _train_command(data: str, work: str, resume: bool, lr: Optional[float] = None) -> List[str]:
    return [sys.executable, "-m", "rescalenet.train", "--data", data, "--output", work, "--arch", "rescalenet18",
            "--img-size", "32", "--batch-size", "4", "--workers", "0", "--threads", "1", "--epochs", "2",
            "--warmup-epochs", "1", "--save-every-steps", "3", "--progress", "plain", "--print-freq", "1",
            "--no-tensorboard", "--seed", "0", *(["--resume", "auto"] if resume else []),
            *(["--lr", f"{lr:g}"] if lr else [])]


def _train_final(work: str) -> Dict[str, torch.Tensor]:
    return load_weights_only(os.path.join(work, "last.pth"))["state_dict"]


def _train_resumed_from(log: str) -> str:
    line = next((x for x in log.splitlines() if "resumed from" in x), "")
    return os.path.basename(line.split("resumed from", 1)[1].strip()) if line else "(did not resume)"


TRAIN = Path("train", _train_prepare, _train_command, _train_final, _train_resumed_from,
             kills={"mid-calibration": "after_step:5", "mid-epoch": "after_step:11",
                    "in-write": "in_write:15:last.pth.tmp"}, diverging_lr=1e4)


# mim train: 8 detection images / 16 clips, 4 iterations per epoch, 3 epochs, a checkpoint
# every 3 iterations (the detection demo keeps only the last one), no validation.
def _mm_config(base: str, stock: bool) -> str:
    hook = "CheckpointHook" if stock else "SafeCheckpointHook"
    text = [f"_base_ = [{base!r}]",
            f"default_hooks = dict(checkpoint=dict(type={hook!r}, by_epoch=False, interval=3, save_best=None))",
            "train_cfg = dict(max_epochs=3, val_begin=1000)",
            "randomness = dict(seed=0)"]
    # (the shipped configs add the plugin's hooks; the stock run takes them out again)
    text.append("custom_hooks = []" if stock else
                "custom_hooks = [dict(type='ExactResumeHook'), dict(type='DivergenceCheckHook'), "
                "dict(type='DataFilesCheckHook')]")
    return "\n".join(text) + "\n"


def _mm_path(name: str, codebase: str, stock: bool = False) -> Path:
    from projects.mim_cli import last_checkpoint, mim_command

    if codebase == "mmdet":
        from projects.detection.demo import DEMO_CONFIG
        from projects.detection.synthetic_coco import data_cfg_options, make_synthetic_coco

        def prepare(root: str) -> None:
            make_synthetic_coco(root, num_train=8, num_val=2, seed=1)
        options = {"train_dataloader.batch_size": 2}
    else:
        from projects.video.demo import DEMO_CONFIG
        from projects.video.synthetic_clips import data_cfg_options, generate

        def prepare(root: str) -> None:
            generate(root, num_train=16, num_val=4, seed=1)
        options = {"train_dataloader.batch_size": 4}

    def command(data: str, work: str, resume: bool, lr: Optional[float] = None) -> List[str]:
        os.makedirs(work, exist_ok=True)
        config = os.path.join(work, "..", f"{name}_config.py")
        with open(config, "w") as f:
            f.write(_mm_config(DEMO_CONFIG, stock))
        lr_options = {"optim_wrapper.optimizer.lr": lr} if lr else {}
        return mim_command(codebase, "train", os.path.abspath(config), work,
                           dict(data_cfg_options(data), **options, **lr_options), ["--resume"] if resume else [])

    def final(work: str) -> Dict[str, torch.Tensor]:
        return load_weights_only(last_checkpoint(work))["state_dict"]

    def resumed_from(log: str) -> str:
        line = next((x for x in log.splitlines() if "resumed epoch" in x), "")
        return line.split(" - INFO - ")[-1].strip() if line else "(did not resume)"

    point = "iter_*.pth*"
    return Path(name, prepare, command, final, resumed_from,
                kills={"mid-calibration": "after_step:5", "mid-epoch": "after_step:11",
                       "in-write": f"in_write:9:{point}"}, diverging_lr=1e4)


# fairseq-train: 2+2-layer rescale_transformer on the generated reversal corpus (400
# pairs: 5 updates per epoch), 18 updates, a checkpoint every 3 updates and at every epoch
# end. ``fairseq`` adds --update-epoch-batch-itr True (docs/reliability.md: fairseq composes the
# batches with the seed of the epoch a process starts at, so a resume in epoch 2 or later
# trains on other batches unless they are rebuilt every epoch); ``fairseq-default`` runs
# without it.
def _fairseq_path(name: str = "fairseq", rebuild_batches: bool = True) -> Path:
    from projects.translation import toy_task

    def prepare(root: str) -> None:
        toy_task.write_corpus(os.path.join(root, "text"), n_train=400, n_valid=40, n_test=40)
        toy_task.preprocess(os.path.join(root, "text"), os.path.join(root, "bin"))

    def command(data: str, work: str, resume: bool, lr: Optional[float] = None) -> List[str]:
        return toy_task.fairseq_cli("fairseq-train") + [
            os.path.join(data, "bin"), "--user-dir", toy_task.PLUGIN_DIR, "--cpu", "--arch", "rescale_transformer",
            *toy_task.TINY_MODEL_ARGS, "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", f"{lr or 1e-3:g}",
            "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "8", "--dropout", "0.1",
            "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1", "--max-tokens", "600",
            "--max-update", "18", "--save-interval-updates", "3", "--seed", "1", "--save-dir", work,
            "--num-workers", "0", "--log-format", "simple", "--log-interval", "1", "--no-progress-bar",
            *(["--update-epoch-batch-itr", "True"] if rebuild_batches else [])]

    def final(work: str) -> Dict[str, torch.Tensor]:
        return load_weights_only(os.path.join(work, "checkpoint_last.pt"))["model"]

    def resumed_from(log: str) -> str:
        line = next((x for x in log.splitlines() if "Loaded checkpoint" in x), "")
        return line.split("Loaded checkpoint", 1)[1].strip() if line else "(did not resume)"

    def after_refusal(data: str, work: str, log: str) -> Optional[List[str]]:
        # the plugin's refusal of a truncated checkpoint_last.pt names the newest complete one
        marker = "--restore-file "
        if marker not in log:
            return None
        restore = log.split(marker, 1)[1].split()[0].rstrip(":;,.")
        return command(data, work, True) + ["--restore-file", restore]

    return Path(name, prepare, command, final, resumed_from,
                # (updates 5, 10, 15 end epochs: after 13 the last checkpoint is update 12, mid-epoch)
                kills={"mid-calibration": "after_step:5", "mid-epoch": "after_step:13",
                       "in-write": "in_write:15:checkpoint_last.pt"},
                after_refusal=after_refusal, diverging_lr=30)


def build_path(name: str) -> Path:
    if name == "train":
        return TRAIN
    if name in ("mmdet", "mmdet-stock"):
        return _mm_path(name, "mmdet", stock=name.endswith("stock"))
    if name == "mmaction2":
        return _mm_path(name, "mmaction2")
    if name in ("fairseq", "fairseq-default"):
        return _fairseq_path(name, rebuild_batches=name == "fairseq")
    raise SystemExit(f"fault_harness: unknown path {name!r}; choose from {PATHS}")


PATHS = ("train", "mmdet", "mmaction2", "fairseq", "mmdet-stock", "fairseq-default")


# -- one path x kill point -----------------------------------------------------------------
def run_reference(path: Path, root: str, env: Dict[str, str]) -> Dict[str, torch.Tensor]:
    work = os.path.join(root, "reference")
    done = os.path.join(root, "reference.done")
    if not os.path.exists(done):
        shutil.rmtree(work, ignore_errors=True)
        rc, out, _ = run_command(path.command(os.path.join(root, "data"), work, False), work + ".log", env)
        if rc != 0:
            raise SystemExit(f"fault_harness: the uninterrupted {path.name} run failed ({rc}); see {work}.log:\n"
                             + out[-3000:])
        open(done, "w").close()
    return path.final_state(work)


def run_point(path: Path, point: str, root: str, env: Dict[str, str], reference: Dict[str, torch.Tensor]) -> Dict:
    work = os.path.join(root, point)
    shutil.rmtree(work, ignore_errors=True)
    data = os.path.join(root, "data")
    t0 = time.time()
    rc, out, killed = run_command(path.command(data, work, False), work + ".killed.log", env, path.kills[point])
    result = dict(path=path.name, point=point, inject=path.kills[point], killed=killed, killed_rc=rc,
                  unloadable_after_kill=unloadable(work), tmp_after_kill=leftovers(work))
    if not killed:
        result.update(resumed=False, error=f"the run was not killed (exit code {rc}): {out[-1500:]}")
        return result
    rc, out, _ = run_command(path.command(data, work, True), work + ".resumed.log", env)
    result["resume_exit_code"] = rc
    if rc != 0 and path.after_refusal is not None:
        workaround = path.after_refusal(data, work, out)
        result["refusal"] = error_line(out)
        if workaround is not None:
            result["workaround"] = " ".join(workaround[-2:])
            rc, out, _ = run_command(workaround, work + ".workaround.log", env)
            result["workaround_exit_code"] = rc
    result["resumed_from"] = path.resumed_from(out)
    if rc != 0:
        result.update(resumed=False, error=error_line(out))
        return result
    result.update(resumed=True, **compare(reference, path.final_state(work)),
                  unloadable_after_resume=unloadable(work), tmp_after_resume=leftovers(work),
                  wall_s=round(time.time() - t0, 1))
    return result


LATE_DIVERGENCE_STEP = 7  # after checkpoints at step 3 and 6 (and an epoch end's, with validation)


def run_divergence(path: Path, root: str, env: Dict[str, str], late: bool = False) -> Dict:
    """One run with ``path.diverging_lr`` (``late``: the default lr, and every weight set
    to NaN after step :data:`LATE_DIVERGENCE_STEP`, once checkpoints exist): it must stop
    with the step and the loss, and leave only checkpoints with finite weights."""
    work = os.path.join(root, "diverging-late" if late else "diverging")
    shutil.rmtree(work, ignore_errors=True)
    lr = None if late else path.diverging_lr
    rc, out, _ = run_command(path.command(os.path.join(root, "data"), work, False, lr=lr), work + ".log", env,
                             inject=f"nan_after_step:{LATE_DIVERGENCE_STEP}" if late else "")
    files = [p for p in sorted(glob.glob(os.path.join(work, "**", "*.pt*"), recursive=True))
             if p.endswith((".pt", ".pth"))]
    non_finite = []
    # fairseq's trainer dumps the failing state to crash.pt (any exception in a training
    # step) for debugging; no resume reads it: reported apart from the checkpoints
    dumps = [p for p in files if os.path.basename(p) == "crash.pt"]
    files = [p for p in files if p not in dumps]
    for p in files:
        state = load_weights_only(p)
        state = state.get("state_dict", state.get("model", {}))
        bad = [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point()
               and not torch.isfinite(v).all()]
        if bad:
            non_finite.append(f"{os.path.relpath(p, work)} ({len(bad)} tensors, e.g. {bad[0]})")
    return dict(path=path.name, lr=lr, late=late, exit_code=rc, error=error_line(out),
                checkpoints=[os.path.relpath(p, work) for p in files], non_finite=non_finite,
                debug_dumps=[os.path.relpath(p, work) for p in dumps])


def error_line(output: str) -> str:
    """The line a failing command ends with: the exception or the CLI's error message
    (not a line of the traceback's code)."""
    lines = [x.rstrip() for x in output.strip().splitlines() if x.strip()]
    for line in reversed(lines):
        if any(m in line for m in ("Error", "error:", "Exception", "diverged")) \
                and not line.lstrip().startswith(("File ", "raise ", "warnings.warn")) \
                and "CalledProcessError" not in line:  # mim's wrapper of the tools/train.py process
            return line.strip()[:800]
    return (lines or [""])[-1][:800]


# -- the table -----------------------------------------------------------------------------
def verdict(r: Dict) -> str:
    if not r.get("resumed"):
        return "NOT resumed: " + r.get("error", "")[:200]
    how = "after a clear refusal, with the documented workaround; " if r.get("workaround") else ""
    if r.get("identical"):
        return how + "identical (bitwise)"
    calib = "same calibration" if r.get("counts_equal") and r.get("max_mean_diff") == 0 else \
        f"calibration DIFFERS (means {r.get('max_mean_diff', float('nan')):.2g})"
    return how + f"{calib}, weights differ by {r.get('max_weight_diff', float('nan')):.2g}"


def print_table(out: str, paths: Sequence[str]) -> List[Dict]:
    rows, results = [], []
    for name in paths:
        for point in KILL_POINTS:
            f = os.path.join(out, name, f"{point}.json")
            if not os.path.exists(f):
                continue
            with open(f) as fh:
                r = json.load(fh)
            results.append(r)
            left = r.get("unloadable_after_resume", r.get("unloadable_after_kill", []))
            rows.append([name, point, r.get("resumed_from", "")[:60], verdict(r),
                         ", ".join(left) if left else "none"])
    if rows:
        print(table(["path", "kill point", "resumed from", "result", "unloadable checkpoints left"], rows))
        ok = sum(1 for r in results if r.get("resumed") and r.get("identical"))
        print(f"\n{len(results)} kill points run, {sum(1 for r in results if r.get('resumed'))} resumed, "
              f"{ok} resumed bitwise identically")
    return results


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--paths", nargs="+", default=list(PATHS[:4]), choices=PATHS)
    parser.add_argument("--points", nargs="+", default=list(KILL_POINTS), choices=KILL_POINTS)
    parser.add_argument("--out", default=DEFAULT_OUT, help="work folders and results")
    parser.add_argument("--quick", action="store_true", help="smoke run: train x mid-calibration, in OUT/quick")
    parser.add_argument("--force", action="store_true", help="rerun finished kill points")
    parser.add_argument("--table", action="store_true", help="only print the table of finished runs")
    parser.add_argument("--divergence", action="store_true",
                        help="instead: one run per path with a learning rate that blows the loss up")
    args = parser.parse_args(argv)
    if args.quick:
        args.paths, args.points, args.out = ["train"], ["mid-calibration"], os.path.join(args.out, "quick")
    if args.table:
        print_table(args.out, args.paths)
        print_divergence(args.out, args.paths)
        return
    torch.set_num_threads(1)
    register_safe_globals()
    print(f"fault harness on {machine()}", flush=True)
    for name in args.paths:
        path = build_path(name)
        root = os.path.join(args.out, name)
        os.makedirs(root, exist_ok=True)
        env = base_env(path.env_path)
        data = os.path.join(root, "data")
        if not os.path.exists(data + ".done"):
            shutil.rmtree(data, ignore_errors=True)
            path.prepare(data)
            open(data + ".done", "w").close()
        if args.divergence:
            for late in (False, True):
                done = os.path.join(root, "diverging-late.json" if late else "diverging.json")
                if args.force or not os.path.exists(done):
                    print(f"[{name}] diverging run ("
                          + (f"weights set to NaN after step {LATE_DIVERGENCE_STEP})" if late
                             else f"lr {path.diverging_lr:g})"), flush=True)
                    with open(done, "w") as f:
                        json.dump(run_divergence(path, root, env, late), f, indent=1)
            continue
        todo = [p for p in args.points if args.force or not os.path.exists(os.path.join(root, f"{p}.json"))]
        if not todo:
            continue
        print(f"[{name}] uninterrupted run", flush=True)
        reference = run_reference(path, root, env)
        for point in todo:
            print(f"[{name}] {point}: killed ({path.kills[point]}), then resumed", flush=True)
            result = run_point(path, point, root, env, reference)
            with open(os.path.join(root, f"{point}.json"), "w") as f:
                json.dump(result, f, indent=1)
            print(f"[{name}] {point}: {verdict(result)}", flush=True)
    print()
    if args.divergence:
        print_divergence(args.out, args.paths)
    else:
        print_table(args.out, args.paths)


def print_divergence(out: str, paths: Sequence[str]) -> None:
    rows = []
    for name in paths:
        for f in (os.path.join(out, name, "diverging.json"), os.path.join(out, name, "diverging-late.json")):
            if not os.path.exists(f):
                continue
            with open(f) as fh:
                r = json.load(fh)
            how = f"NaN weights after step {LATE_DIVERGENCE_STEP}" if r.get("late") else f"lr {r['lr']:g}"
            rows.append([name, how, r["exit_code"], r["error"][:300],
                         ", ".join(r["non_finite"]) or (f"none of {len(r['checkpoints'])}: " + (", ".join(r["checkpoints"]) or "-")),
                         ", ".join(r.get("debug_dumps", [])) or "none"])
    if rows:
        print(table(["path", "divergence", "exit code", "the message it stops with", "checkpoints with NaN/inf weights",
                     "framework's debug dump"], rows))


if __name__ == "__main__":
    main()
