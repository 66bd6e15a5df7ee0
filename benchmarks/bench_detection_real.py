"""Mask R-CNN on real objects through `mim train mmdet` / `mim test mmdet`: RescaleNet-18/-50
against mmdet's ResNet-18/-50 with BatchNorm and with GroupNorm, all from scratch.

Data: Fashion-COCO (``projects/detection/fashion_coco.py``, written by ``make data``):
2,000 training, 300 validation and 500 test canvases of 128x128 px, each with 2-4 real
Fashion-MNIST items (instance masks from the items' pixels, 10 categories); the three
splits use disjoint Fashion-MNIST items.

Models (``MODELS``): the detector, data and schedule of
``configs/mask_rcnn_rescale18_fashion.py`` (FPN and heads 64 channels wide and
norm-free, batch 4, 1,000 iterations: 200 warm-up, lr x 0.1 at 750, gradient clipping
at 35); only the backbone differs:

    rescale18, rescale50   RescaleNetBackbone (this project; no normalization)
    r18_bn, r50_bn         mmdet ResNet + BatchNorm (trained statistics, norm_eval=False)
    r18_gn, r50_gn         mmdet ResNet + GroupNorm(32), the norm of mmdet's configs/scratch

Protocol (shared with ``bench_video_real.py``):

1. *sweep*: the depth-18 model of each backbone family (RescaleNet, BN, GN) at every
   ``--lrs`` with the first seed, scored by ``mim test`` on the **validation** split
   (bbox mAP); while a family's best lr sits at an edge of what it tried, the grid is
   extended by a factor 2 past that edge (``--max-extensions`` times at most), so no
   family is held at the grid's edge; the best lr is that family's lr, at depth 18 and
   50 (sweeping the depth-50 models as well would double the CPU cost);
2. *seeds*: every model at its family's lr with every ``--seeds`` (the sweep's run is
   reused for the first seed);
3. *table*: bbox and segm mAP of ``mim test`` on the **test** split, mean +- sd over
   seeds, with training wall time and seconds per iteration; ``--plot`` draws the
   training loss curves and the mAPs.

Every run lives in ``runs/detection_real/<tag>/<model>/lr<lr>_s<seed>/`` (``train/``,
``val/`` and ``test/`` work folders, ``result.json``); ``result.json`` is written as soon
as the run is scored, and a finished run is skipped when the script is started again.
A run interrupted during training resumes from its last epoch checkpoint (``mim train
--resume``). Each mim command runs with one thread (``--threads``).

    python benchmarks/bench_detection_real.py --quick          # smoke test: 2 iterations per model, ~3 minutes
    python benchmarks/bench_detection_real.py                  # the table (CPU budget: see --help)
    python benchmarks/bench_detection_real.py --phase table --plot docs/detection_real.png
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import os
import re
import shutil
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional, Sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import ROOT, chosen_sweep_lr, lr_past_winning_edge, machine, swept_lrs, table  # noqa: E402

from projects import mim_cli  # noqa: E402

RUNS = os.path.join(ROOT, "runs")  # each task's runs go to RUNS/<task.name>/<tag>/


@dataclass(frozen=True)
class Model:
    label: str
    config: str  # relative to the repository root
    family: str  # models of one family share the lr their sweep model chose
    sweep: bool = False  # this model's sweep chooses its family's lr


@dataclass
class Budget:
    """What one table (``--tag``) runs: the first grid of lrs, how many lrs past its
    winning edge the sweep may add, the seeds, and for a smoke run how many samples of
    each split to use (``None``: all) and how many epochs."""

    lrs: List[float]
    seeds: List[int]
    subset: Optional[Dict[str, int]] = None
    epochs: Optional[int] = None
    max_extensions: int = 0


@dataclass(frozen=True)
class Task:
    """One benchmark of the mim protocol (see the module docstring)."""

    name: str  # runs/<name>
    codebase: str  # mim's name of the OpenMMLab package
    models: Dict[str, Model]
    score: str  # metric of `mim test` on val that chooses the lr (higher is better)
    metrics: Sequence[str]  # metrics of `mim test` on test that the table reports
    default_data: str
    check_data: Callable[[str], None]  # raises SystemExit naming what is missing
    data_options: Callable[[str, str], Dict[str, str]]  # (root, test split) -> --cfg-options
    quick_options: Callable[[int], Dict[str, object]]  # epochs -> --cfg-options of a smoke run
    default: Budget
    quick: Budget
    show: Callable[[str], str] = lambda line: line.rstrip()[-160:]
    budget_note: str = ""


# ---------------------------------------------------------------- runs on disk

def _lr_name(lr: float) -> str:
    return f"{lr:g}"


def model_dir(task: Task, tag: str, model: str) -> str:
    """The folder of ``model``'s runs in table ``tag``: one ``lr<lr>_s<seed>`` folder a run."""
    return os.path.join(RUNS, task.name, tag, model)


def run_dir(task: Task, tag: str, model: str, lr: float, seed: int) -> str:
    return os.path.join(model_dir(task, tag, model), f"lr{_lr_name(lr)}_s{seed}")


def load_result(task: Task, tag: str, model: str, lr: float, seed: int) -> Optional[dict]:
    path = os.path.join(run_dir(task, tag, model, lr, seed), "result.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        result = json.load(f)
    if result.get("status") == "done" and result.get("train_curve"):  # runs recorded before run_status's rule
        result["status"] = run_status([loss for _, _, loss in result["train_curve"]])
    return result


# a run whose training loss ends this many times above its first logged value diverged
DIVERGED_LOSS_FACTOR = 10.0


def run_status(losses: List[float]) -> str:
    """'diverged' when the logged training loss became non-finite or ended more than
    DIVERGED_LOSS_FACTOR times its first logged value, else 'done'. The second case is
    real: SlowOnly RescaleNet3d-18 at lr 0.1 reached a loss of 2e20 with an infinite
    gradient norm and no inf or NaN in the loss mmengine logs."""
    if not losses:
        return "done"
    if not all(map(_finite, losses)) or losses[-1] > DIVERGED_LOSS_FACTOR * losses[0]:
        return "diverged"
    return "done"


_TRAIN_LINE = re.compile(r"Epoch\(train\)\s*\[(\d+)\]\[\s*(\d+)/(\d+)\].*?\btime: ([0-9.]+).*?\bloss: (\S+)")


def train_curve(work_dir: str) -> List[List[float]]:
    """``[[iteration, seconds per iteration, loss], ...]`` from the MMEngine logs of a
    training work folder (all of its sittings, a resumed one included; later wins)."""
    points: Dict[int, List[float]] = {}
    for log in sorted(glob.glob(os.path.join(work_dir, "*", "*.log"))):
        with open(log, errors="replace") as f:
            for epoch, i, n, seconds, loss in _TRAIN_LINE.findall(f.read()):
                it = (int(epoch) - 1) * int(n) + int(i)
                points[it] = [it, float(seconds), float(loss)]
    return [points[k] for k in sorted(points)]


# ---------------------------------------------------------------- one run

def _env(threads: int) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"}
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONWARNINGS="ignore")
    return env


def _mim(task: Task, command: str, model: Model, work_dir: str, options: Dict[str, object],
         extra: Sequence[str], threads: int) -> str:
    os.makedirs(work_dir, exist_ok=True)
    out = mim_cli.run_mim(task.codebase, command, os.path.join(ROOT, model.config), work_dir, options,
                          extra, env=_env(threads), show=task.show)
    with open(os.path.join(work_dir, f"{command}.out"), "w") as f:
        f.write(out)
    return out


# What mmdet's CocoMetric logs, and returns no metric at all, when a model detects nothing
NO_DETECTIONS = "The testing results of the whole dataset is empty"


def scored_metrics(task: Task, metrics: Dict[str, float], output: str, work_dir: str) -> Dict[str, float]:
    """``metrics`` of one ``mim test`` with every metric the table reads. A model that
    detects nothing scores 0 (CocoMetric then reports no metric, only its log line says
    why; ``no_detections`` records it); any other missing metric is an error."""
    missing = [k for k in (task.score, *task.metrics) if k not in metrics]
    if not missing:
        return metrics
    if NO_DETECTIONS in output:
        return {**metrics, **{k: 0.0 for k in missing}, "no_detections": True}
    raise SystemExit(f"error: `mim test` in {work_dir} reported no {missing}; its output: "
                     f"{os.path.join(work_dir, 'test.out')}")


def _test(task: Task, model: Model, checkpoint: str, work_dir: str, options: Dict[str, object],
          threads: int) -> Dict[str, float]:
    shutil.rmtree(work_dir, ignore_errors=True)
    out = _mim(task, "test", model, work_dir, options, ["--checkpoint", checkpoint], threads)
    return scored_metrics(task, mim_cli.read_test_metrics(work_dir), out, work_dir)


def train_and_test(task: Task, args, budget: Budget, name: str, lr: float, seed: int) -> dict:
    """``mim train`` (resumed if interrupted), then ``mim test`` on val and on test;
    writes and returns ``result.json``."""
    model = task.models[name]
    out = run_dir(task, args.tag, name, lr, seed)
    train_dir = os.path.join(out, "train")
    data = {"val": task.data_options(args.data, "val"), "test": task.data_options(args.data, "test")}
    options: Dict[str, object] = dict(data["val"])
    # no validation inside training: `mim test` on val below scores the run
    options.update({"optim_wrapper.optimizer.lr": lr, "randomness.seed": seed, "train_cfg.val_begin": 10**6})
    if budget.subset:
        options.update(task.quick_options(budget.epochs or 1))
        for loader, n in budget.subset.items():
            options[f"{loader}_dataloader.dataset.indices"] = n
    resume = os.path.exists(os.path.join(train_dir, "last_checkpoint"))
    start = time.time()
    _mim(task, "train", model, train_dir, options, ["--resume"] if resume else [], args.threads)
    train_seconds = time.time() - start
    checkpoint = mim_cli.last_checkpoint(train_dir)
    curve = train_curve(train_dir)
    metrics = {}
    for split in ("val", "test"):
        test_options = dict(data[split])
        if budget.subset:
            test_options["test_dataloader.dataset.indices"] = budget.subset["test"]
        metrics[split] = _test(task, model, checkpoint, os.path.join(out, split), test_options, args.threads)
    losses = [loss for _, _, loss in curve]
    result = {
        "task": task.name, "tag": args.tag, "model": name, "label": model.label, "config": model.config,
        "lr": lr, "seed": seed, "budget": asdict(budget), "machine": machine(), "threads": args.threads,
        "status": run_status(losses),
        "train_seconds": round(train_seconds, 1), "resumed": resume, "checkpoint": os.path.relpath(checkpoint, ROOT),
        "iterations": curve[-1][0] if curve else None,
        # the first logged window includes start-up and the AddBias calibration passes
        "seconds_per_iter": statistics.median([s for _, s, _ in curve[1:]]) if len(curve) > 1 else None,
        "final_loss": losses[-1] if losses else None,
        "train_curve": curve, "val": metrics["val"], "test": metrics["test"],
    }
    with open(os.path.join(out, "result.json"), "w") as f:
        json.dump(result, f, indent=1)
    return result


def _finite(x: float) -> bool:
    return x == x and abs(x) != float("inf")


# ---------------------------------------------------------------- protocol

def sweep_model(task: Task, family: str) -> str:
    return next(n for n, m in task.models.items() if m.family == family and m.sweep)


def sweep_scores(task: Task, tag: str, budget: Budget, family: str) -> Dict[float, float]:
    """lr -> validation score of the family's sweep runs (-inf: diverged)."""
    model, seed = sweep_model(task, family), budget.seeds[0]
    lrs = swept_lrs(model_dir(task, tag, model), seed)
    results = {lr: load_result(task, tag, model, lr, seed) for lr in lrs}
    return {lr: r["val"][task.score] if r["status"] == "done" else -math.inf for lr, r in results.items()}


def next_sweep_lr(task: Task, tag: str, budget: Budget, family: str) -> Optional[float]:
    """The lr past the winning edge of the family's sweep (``_common.lr_past_winning_edge``),
    or None when its first grid is unfinished, its best lr is inside, or
    ``budget.max_extensions`` extensions were run."""
    return lr_past_winning_edge(sweep_scores(task, tag, budget, family), budget.lrs, budget.max_extensions)


def chosen_lr(task: Task, tag: str, budget: Budget, family: str) -> Optional[float]:
    """The sweep lr of ``family`` with the best validation score; None until its sweep
    (extensions included) is done, or when every lr diverged."""
    return chosen_sweep_lr(sweep_scores(task, tag, budget, family), budget.lrs, budget.max_extensions)


def pending(task: Task, budget: Budget, models: Sequence[str], phase: str) -> List[tuple]:
    """``(model, lr or None for the family's chosen lr, seed)`` in running order."""
    todo = []
    if phase in ("sweep", "all"):
        # lr-major: after each round every family has one more point of its sweep
        todo += [(m, lr, budget.seeds[0]) for lr in budget.lrs for m in models if task.models[m].sweep]
    if phase in ("seeds", "all"):
        # the sweep models' other seeds first (cheap), then the rest seed-major
        todo += [(m, None, s) for s in budget.seeds[1:] for m in models if task.models[m].sweep]
        todo += [(m, None, s) for s in budget.seeds for m in models if not task.models[m].sweep]
    return todo


def check_tag(task: Task, tag: str, budget: Budget) -> None:
    """A tag holds runs of one budget and one set of configs: written by its first run,
    refused if it differs."""
    mine = dict(subset=budget.subset, epochs=budget.epochs,
                configs={n: resolved_config(m.config) for n, m in task.models.items()})
    path = os.path.join(RUNS, task.name, tag, "config.json")
    if os.path.exists(path):
        with open(path) as f:
            theirs = json.load(f)
        changed = sorted(k for k in mine["configs"] if theirs.get("configs", {}).get(k) != mine["configs"][k])
        if {k: theirs.get(k) for k in ("subset", "epochs")} != {k: mine[k] for k in ("subset", "epochs")} or changed:
            raise SystemExit(f"error: {os.path.join(RUNS, task.name, tag)} holds runs of another budget or config "
                             f"(changed: {changed or 'subset/epochs'}); give another --tag")
    else:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            json.dump(mine, f, indent=1)


def resolved_config(config: str) -> dict:
    """The config as MMEngine resolves it (inheritance applied, comments gone), as JSON
    data: what a tag's runs must agree on."""
    from mmengine.config import Config

    return json.loads(json.dumps(Config.fromfile(os.path.join(ROOT, config)).to_dict(), sort_keys=True, default=str))


def run_protocol(task: Task, args, budget: Budget) -> None:
    check_tag(task, args.tag, budget)
    if args.phase in ("sweep", "all"):
        run_list(task, args, budget, pending(task, budget, args.models, "sweep"))
        sweepers = [n for n in args.models if task.models[n].sweep]
        while True:  # past a winning edge, one factor 2 at a time
            more = [(n, lr, budget.seeds[0]) for n in sweepers
                    if (lr := next_sweep_lr(task, args.tag, budget, task.models[n].family)) is not None]
            if not more:
                break
            run_list(task, args, budget, more, "sweep extension ")
    if args.phase in ("seeds", "all"):
        run_list(task, args, budget, pending(task, budget, args.models, "seeds"))


def run_list(task: Task, args, budget: Budget, todo: Sequence[tuple], stage: str = "") -> None:
    """Train and score every ``(model, lr or None for the family's chosen lr, seed)`` not done yet."""
    for i, (name, lr, seed) in enumerate(todo, 1):
        family = task.models[name].family
        if lr is None:
            lr = chosen_lr(task, args.tag, budget, family)
            if lr is None:
                print(f"[{stage}{i}/{len(todo)}] {name} seed {seed}: the {family} sweep "
                      f"({sweep_model(task, family)}) is not finished; skipped", flush=True)
                continue
        if load_result(task, args.tag, name, lr, seed) is not None:
            continue
        print(f"[{stage}{i}/{len(todo)}] {name} lr {_lr_name(lr)} seed {seed}: mim train {task.codebase} "
              f"{task.models[name].config} ({os.path.relpath(run_dir(task, args.tag, name, lr, seed), ROOT)})",
              flush=True)
        r = train_and_test(task, args, budget, name, lr, seed)
        print(f"    {r['status']}: val {task.score} {r['val'][task.score]:.3f}, test " +
              ", ".join(f"{k} {r['test'][k]:.3f}" for k in task.metrics) +
              f"; {r['train_seconds'] / 60:.1f} min training, {r['seconds_per_iter']} s/iter", flush=True)


def _mean_sd(values: Sequence[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} +- {statistics.stdev(values):.3f}"


def finished(task: Task, tag: str, budget: Budget, name: str) -> List[dict]:
    lr = chosen_lr(task, tag, budget, task.models[name].family)
    if lr is None:
        return []
    return [r for s in budget.seeds if (r := load_result(task, tag, name, lr, s)) is not None]


def print_tables(task: Task, args, budget: Budget) -> None:
    print(f"\n### Sweep (seed {budget.seeds[0]}): validation {task.score} of `mim test` on val, "
          f"highest = chosen\n")
    sweepers = [n for n in args.models if task.models[n].sweep]
    lrs = sorted(set(budget.lrs).union(*(swept_lrs(model_dir(task, args.tag, n), budget.seeds[0]) for n in sweepers)))
    rows = []
    for name in sweepers:
        row = [name]
        for lr in lrs:
            r = load_result(task, args.tag, name, lr, budget.seeds[0])
            row.append("-" if r is None else "diverged" if r["status"] != "done" else
                       "0 (no detections)" if r["val"].get("no_detections") else f"{r['val'][task.score]:.3f}")
        rows.append(row)
    print(table(["model"] + [f"lr {_lr_name(lr)}" for lr in lrs], rows))

    print(f"\n### Test split, `mim test` at the family's chosen lr (mean +- sd over seeds)\n")
    rows = []
    for name in args.models:
        results = finished(task, args.tag, name=name, budget=budget)
        done = [r for r in results if r["status"] == "done"]
        lr = chosen_lr(task, args.tag, budget, task.models[name].family)
        rows.append([name, task.models[name].label, "-" if lr is None else _lr_name(lr),
                     f"{len(done)}/{len(budget.seeds)}"] +
                    [_mean_sd([r["test"][k] for r in done]) for k in task.metrics] +
                    [_mean_sd([r["val"][task.score] for r in done]),
                     f"{statistics.mean(r['train_seconds'] for r in results) / 60:.1f}" if results else "-",
                     f"{statistics.median(r['seconds_per_iter'] for r in results):.2f}" if results else "-"])
    print(table(["model", "backbone", "lr", "seeds done"] + [f"test {k}" for k in task.metrics] +
                [f"val {task.score}", "train min / run", "s / iter"], rows))


def plot(task: Task, args, budget: Budget, path: str, title: str) -> None:
    """Training loss against iteration (mean over seeds, band = min..max) and the test
    metric per model (one dot per seed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = task.metrics[0]
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw=dict(width_ratios=[3, 2]))
    names = [n for n in args.models if finished(task, args.tag, budget, n)]
    for x, name in enumerate(names):
        results = [r for r in finished(task, args.tag, budget, name) if r["train_curve"]]
        its = [p[0] for p in results[0]["train_curve"]]
        curves = [[p[2] for p in r["train_curve"]] for r in results if [p[0] for p in r["train_curve"]] == its]
        mean = [statistics.mean(c) for c in zip(*curves)]
        line, = ax_loss.plot(its, mean, label=f"{name} (lr {_lr_name(results[0]['lr'])}, {len(curves)} seeds)")
        if len(curves) > 1:
            ax_loss.fill_between(its, [min(c) for c in zip(*curves)], [max(c) for c in zip(*curves)],
                                 color=line.get_color(), alpha=0.15)
        values = [r["test"][key] for r in results if r["status"] == "done"]
        ax_metric.scatter([x] * len(values), values, color=line.get_color())
        if values:
            ax_metric.hlines(statistics.mean(values), x - 0.3, x + 0.3, color=line.get_color())
    ax_loss.set_xlabel("iteration")
    ax_loss.set_ylabel("training loss (logged window mean)")
    ax_loss.set_yscale("log")
    ax_loss.grid(alpha=0.3)
    ax_loss.legend(fontsize=8)
    ax_metric.set_xticks(range(len(names)), names, rotation=30, fontsize=8)
    ax_metric.set_ylabel(f"test {key} (dots: seeds, bar: mean)")
    ax_metric.grid(alpha=0.3, axis="y")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"wrote {os.path.relpath(path, ROOT)}")


def main(task: Task, argv=None, title: str = "") -> None:
    global RUNS  # --output
    p = argparse.ArgumentParser(description=sys.modules["__main__"].__doc__.split("\n\n")[0]
                                if sys.modules["__main__"].__doc__ else task.name,
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=task.budget_note)
    p.add_argument("--data", default=task.default_data, help="the data set folder (default: %(default)s)")
    p.add_argument("--output", default=RUNS,
                   help="folder of the tables (default: runs/; the recorded runs behind docs/results.md "
                        "are in benchmarks/results/)")
    p.add_argument("--tag", default=None, help=f"name of this table's folder under OUTPUT/{task.name} "
                                               "(default: core, or quick with --quick)")
    p.add_argument("--models", nargs="+", default=list(task.models), choices=list(task.models))
    p.add_argument("--phase", choices=["all", "sweep", "seeds", "table"], default="all")
    p.add_argument("--lrs", type=float, nargs="+", default=None,
                   help=f"sweep lrs (default: {' '.join(map(_lr_name, task.default.lrs))})")
    p.add_argument("--max-extensions", type=int, default=None,
                   help="lrs the sweep may add past a winning edge, a factor 2 each "
                        f"(default: {task.default.max_extensions})")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help=f"seeds; the first is the sweep's (default: {' '.join(map(str, task.default.seeds))})")
    p.add_argument("--threads", type=int, default=1, help="torch threads of each mim command (default: 1)")
    p.add_argument("--plot", default=None, help="PNG of the training loss curves and test metric (default: none)")
    p.add_argument("--quick", action="store_true", help="smoke test: a few samples per split, one lr, one seed")
    args = p.parse_args(argv)
    RUNS = os.path.abspath(args.output)
    budget = task.quick if args.quick else task.default
    budget = Budget(lrs=args.lrs or budget.lrs, seeds=args.seeds or budget.seeds, subset=budget.subset,
                    epochs=budget.epochs, max_extensions=budget.max_extensions if args.max_extensions is None
                    else args.max_extensions)
    args.tag = args.tag or ("quick" if args.quick else "core")
    task.check_data(args.data)
    missing = sorted({m.family for m in task.models.values()} - {task.models[n].family for n in args.models
                                                                  if task.models[n].sweep})
    if missing and args.phase != "table":
        print(f"note: --models leaves out the sweep model of {missing}: their lr comes from runs already "
              "on disk, or they are skipped", flush=True)
    if args.phase != "table":
        run_protocol(task, args, budget)
    print_tables(task, args, budget)
    if args.plot:
        plot(task, args, budget, args.plot, title or task.name)


# ---------------------------------------------------------------- detection

def _check_coco(root: str) -> None:
    from projects.detection.fashion_coco import CLASSES

    how = (f"write it with `make data` or `python -m projects.detection.fashion_coco --data "
           f"/usr/share/datasets/fashion-mnist --output {root}`")
    for split in ("train", "val", "test"):
        ann = os.path.join(root, "annotations", f"instances_{split}2017.json")
        if not os.path.isfile(ann):
            raise SystemExit(f"error: {ann} not found: --data must be a Fashion-COCO folder; {how}")
    with open(ann) as f:
        names = [c["name"] for c in sorted(json.load(f)["categories"], key=lambda c: c["id"])]
    if tuple(names) != tuple(CLASSES):
        raise SystemExit(f"error: {ann} has {len(names)} categories {names[:4]}..., the configs expect the "
                         f"{len(CLASSES)} Fashion-MNIST classes {list(CLASSES)}; {how}")


def _detection_quick(epochs: int) -> Dict[str, object]:
    return {"train_cfg.max_epochs": epochs, "default_hooks.logger.interval": 1, "log_processor.window_size": 1}


def _detection_task() -> Task:
    from projects.detection import fashion_coco
    from projects.detection.demo import _progress

    models = {
        "rescale18": Model("RescaleNet-18 (no norm)", "configs/mask_rcnn_rescale18_fashion.py", "rescale", True),
        "r18_bn": Model("ResNet-18 BN", "configs/mask_rcnn_r18_bn_fashion.py", "bn", True),
        "r18_gn": Model("ResNet-18 GN", "configs/mask_rcnn_r18_gn_fashion.py", "gn", True),
        "rescale50": Model("RescaleNet-50 (no norm)", "configs/mask_rcnn_rescale50_fashion.py", "rescale"),
        "r50_bn": Model("ResNet-50 BN", "configs/mask_rcnn_r50_bn_fashion.py", "bn"),
        "r50_gn": Model("ResNet-50 GN", "configs/mask_rcnn_r50_gn_fashion.py", "gn"),
    }
    return Task(
        name="detection_real", codebase="mmdet", models=models, score="coco/bbox_mAP",
        metrics=("coco/bbox_mAP", "coco/segm_mAP", "coco/bbox_mAP_50", "coco/segm_mAP_50"),
        default_data=os.path.join(ROOT, "data", "fashion_coco"), check_data=_check_coco,
        data_options=fashion_coco.data_cfg_options, quick_options=_detection_quick,
        default=Budget(lrs=[0.01, 0.02, 0.04], seeds=[0, 1], max_extensions=2),
        quick=Budget(lrs=[0.02], seeds=[0], subset={"train": 8, "val": 4, "test": 4}, epochs=1),
        show=_progress,
        budget_note="CPU budget of the default table (1 thread, 2-core machine shared with other jobs): "
                    "18-24 runs (3 families x 3 lrs at depth 18, plus up to 2 lrs past a winning edge each, then "
                    "1 more seed of each, then the 3 depth-50 models x 2 seeds) of 1,000 iterations; measured per run in docs/results.md "
                    "('Real data: detection').")


if __name__ == "__main__":
    main(_detection_task(), title="Mask R-CNN from scratch on Fashion-COCO (128 px, 1,000 iterations of batch 4)")
