"""Classification on real data: RescaleNet against BatchNorm, GroupNorm, Fixup, SkipInit,
the plain net without normalization (and timm's NF-ResNet where its layout fits) on
Fashion-MNIST, every run through ``python -m rescalenet.train``.

    make data                                                   # data/fashion_mnist/{train,val,test}
    python benchmarks/bench_fashion.py --group cifar20 --jobs 2  # lr sweep, then 3 seeds per method
    python benchmarks/bench_fashion.py --group ablations         # RescaleNet-20 ablations (after cifar20;
                                                                 # with --clip-grad 1 at that row's lr)
    python benchmarks/bench_fashion.py --group depth             # 20 / 110 / 1202 layers, one lr
    python benchmarks/bench_fashion.py --group depth --lr 0.0125 --layers 1202 --methods SkipInit
                                                                 # one row at another lr (its own folder)
    python benchmarks/bench_fashion.py --group cifar20 --table   # only print what is done
    python benchmarks/bench_fashion.py --group cifar20 --quick   # smoke run: tiny budget, own folder

Fairness: every method trains with the same recipe (batch 128, SGD 0.9, weight decay
1e-4, a linear warm-up over the first 5 % of the steps (the official 5 of 105 epochs)
then cosine, Dropout2d 0.03 in stage 3 on and dropout 0.3 before the classifier for
every network, as the official RescaleNet recipe gives its BN baseline, padded random
crop + flip, 28 px greyscale for the CIFAR layout and 32 px for the ImageNet layout) and
gets its own learning rate, chosen on the validation split carved out of the training
set (6,000 images; the test set never chooses anything): seed 0 trains the full budget
(one epoch of the 54,000 training images, 421 steps: what this 2-core CPU affords for
every method) at 0.05, 0.1 and 0.2, the grid extended by a factor 2 past either end (up
to 4 times) while the best lr sits at the edge; the lr with the best final validation
top-1 is the method's, its seed-0 run is the first of the three seeds reported, and
seeds 1 and 2 train at that lr. A method that diverges or stays at chance at every lr of
the first grid is not swept further nor seeded: the lr is not what fails. The sweep is the final budget itself, so what is chosen
is exactly what is reported (a shorter sweep chose lrs that were unstable over a whole
epoch). Runs are validated every 105 steps (the learning curve) and scored once on the
test set; a seed that diverges is reported as such.

The plain network (no normalization, nothing else) collapses to the class prior at every
lr (`docs/results.md` has the measured cause: its first gradients have norm ~190); the
row "plain, gradient clipping" is the same network with ``--clip-grad 1``, the smallest
change found that lets it train. "RescaleNet, gradient clipping" asks whether the same
clipping lets RescaleNet use the larger learning rates BN trains at (it diverges at
twice its chosen lr without); "BN, gradient clipping" gives BN the same clipping, so that a
gain from clipping is not credited to the method.

Every run writes its folder under ``runs/fashion/`` (``result.json`` when it finished);
finished runs are skipped when the command is run again, so a table can be completed over
several sittings. The table, a learning-curve PNG (validation top-1 against epoch, mean
and min-max band over the seeds) and ``summary.json`` are written after every group.
"""
from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import best_lr, lr_past_winning_edge  # noqa: E402
from rescalenet.fashion_mnist import MEAN as FASHION_MEAN, STD as FASHION_STD  # noqa: E402

_CIFAR_METHODS = {"RescaleNet": "rescalenet_{a}", "BN": "resnet_{a}", "GN": "gn_resnet_{a}",
                  "Fixup": "fixup_resnet_{a}", "SkipInit": "skipinit_resnet_{a}", "plain": "plain_resnet_{a}",
                  "plain, gradient clipping": "plain_resnet_{a} --clip-grad 1",
                  "RescaleNet, gradient clipping": "rescalenet_{a} --clip-grad 1",
                  "BN, gradient clipping": "resnet_{a} --clip-grad 1"}
GROUPS: Dict[str, dict] = {
    "cifar20": dict(size=28, epochs=1, methods={k: v.format(a="cifar20") for k, v in _CIFAR_METHODS.items()}),
    "cifar56": dict(size=28, epochs=1, methods={k: v.format(a="cifar56") for k, v in _CIFAR_METHODS.items()}),
    "imagenet18": dict(size=32, epochs=1, methods={
        "RescaleNet": "rescalenet18", "BN": "resnet18", "GN": "gn_resnet18", "Fixup": "fixup_resnet18",
        "SkipInit": "skipinit_resnet18", "plain": "plain_resnet18",
        "plain, gradient clipping": "plain_resnet18 --clip-grad 1", "NF-ResNet-26": "nf_resnet26",
        # the downsample question of the issue, on the network it was asked about
        "RescaleNet, variance-preserving downsample": "rescalenet18 --shortcut-pool avg-vp"}),
}
SWEEP_LRS = (0.05, 0.1, 0.2)
MAX_EXTENSIONS = 4  # a factor 2 each, past an edge that wins (a net that diverges gets down to lr / 16)
CHANCE_MARGIN = 15.0  # val top-1 (%) below which a run learned nothing (10 classes: chance is 10 %)
VAL_EVERY = 105        # validation points per epoch of 421 steps: the learning curve
EPOCH_STEPS = 421      # 54,000 training images / batch 128, drop-last
QUICK_STEPS = 20       # --quick: steps per run


def warmup_steps(total: int) -> int:
    """A linear warm-up over 5 % of a run's steps, the official recipe's share (5 of 105 epochs)."""
    return max(1, round(0.05 * total))
SEEDS = (0, 1, 2)
# RescaleNet-20 (L = 9 blocks) ablations: name -> extra trainer flags
ABLATION_BASE = ("RescaleNet, gradient clipping", ["--clip-grad", "1"])
ABLATIONS = {
    "the method as released (c = L-1 = 8, scalar m, AddBias, depth init, avg shortcut)": [],
    "c = 0": ["--rescale-c", "0"],
    "c = L/2 = 4": ["--rescale-c", "4"],
    "c = 2L = 18": ["--rescale-c", "18"],
    "vector m (per output channel)": ["--multiplier", "vector"],
    "inner vectors (official commented-out)": ["--multiplier", "inner_vector"],
    "no multiplier": ["--multiplier", "none"],
    "AddBias without mean subtraction (0 calibration batches)": ["--calibration-steps", "0"],
    "AddBias calibrated on 32 batches": ["--calibration-steps", "32"],
    "no depth-scaled init": ["--no-depth-init"],
    "variance-preserving downsample": ["--shortcut-pool", "avg-vp"],
}
DEPTH = dict(archs=("cifar20", "cifar110", "cifar1202"),
             methods=("RescaleNet", "plain", "Fixup", "SkipInit", "BN", "plain, gradient clipping"),
             lr=0.05, steps=120, batch=32)


def recipe(size: int) -> List[str]:
    return ["--in-chans", "1", "--mean", str(FASHION_MEAN), "--std", str(FASHION_STD), "--img-size", str(size),
            "--val-resize", str(size), "--train-aug", "crop-flip", "--batch-size", "128", "--schedule", "cosine",
            "--warmup-epochs", "0", "--drop-conv", "0.03", "--drop-fc", "0.3", "--workers", "0", "--threads", "1",
            "--progress", "plain", "--print-freq", "100", "--no-tensorboard"]


class Runner:
    """Runs ``python -m rescalenet.train`` into a folder unless it already finished there."""

    def __init__(self, data: str, out: str, jobs: int, quick: bool):
        self.data, self.out, self.jobs, self.quick = data, out, jobs, quick

    def folder(self, *parts) -> str:
        return os.path.join(self.out, *[str(p) for p in parts])

    @staticmethod
    def result(folder: str) -> Optional[dict]:
        path = os.path.join(folder, "result.json")
        if os.path.isfile(path):
            with open(path) as f:
                return json.load(f)
        status = os.path.join(folder, "failed.json")
        if os.path.isfile(status):
            with open(status) as f:
                return json.load(f)
        return None

    def run(self, folder: str, arch: str, args: Sequence[str]) -> dict:
        done = self.result(folder)
        if done is not None:
            return done
        if os.path.isdir(folder):  # an unfinished run (killed): start it again from scratch
            shutil.rmtree(folder)
        os.makedirs(folder, exist_ok=True)
        cmd = [sys.executable, "-m", "rescalenet.train", "--data", self.data, "--arch", arch,
               "--output", folder, *args]
        if self.quick:
            cmd += ["--limit-train-batches", str(QUICK_STEPS), "--limit-eval-batches", "2"]
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1",
                   PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        start = time.time()
        print(f"[start] {os.path.relpath(folder, self.out)}: {arch}", flush=True)
        with open(os.path.join(folder, "stdout.log"), "w") as log:
            log.write(" ".join(cmd) + "\n")
            log.flush()
            proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        wall = time.time() - start
        res = self.result(folder)
        if proc.returncode != 0 or res is None:
            with open(os.path.join(folder, "stdout.log")) as f:
                tail = f.read()[-2000:]
            res = dict(arch=arch, failed=True, returncode=proc.returncode, wall_s=wall,
                       reason=next((line for line in reversed(tail.splitlines()) if "Error" in line or "error" in line),
                                   tail.splitlines()[-1] if tail else ""))
            if "loss is" in tail:  # the trainer stops on a non-finite loss: record the divergence
                res["diverged"] = True
                with open(os.path.join(folder, "failed.json"), "w") as f:
                    json.dump(res, f, indent=1)
            print(f"[FAILED] {os.path.relpath(folder, self.out)}: {res['reason']}", flush=True)
            return res
        res["wall_s"] = wall
        with open(os.path.join(folder, "result.json"), "w") as f:
            json.dump(res, f, indent=1)
        print(f"[done {wall / 60:.1f} min] {os.path.relpath(folder, self.out)}: "
              f"val {res.get('val_acc1', float('nan')):.2f} test {res.get('test_acc1', float('nan')):.2f}", flush=True)
        return res

    def serial(self) -> "Runner":
        """The same runner, one run at a time (for a caller that runs its own jobs side by side)."""
        one = copy.copy(self)
        one.jobs = 1
        return one

    def run_all(self, tasks: List[tuple]) -> List[dict]:
        with ThreadPoolExecutor(self.jobs) as pool:
            return list(pool.map(lambda t: self.run(*t), tasks))


def _score(res: Optional[dict]) -> float:
    return -math.inf if res is None or res.get("failed") else float(res.get("val_acc1", -math.inf))


def run_folder(runner: Runner, group: str, method: str, lr: float, seed: int, tag: str = "final") -> str:
    return runner.folder(group, method, f"{tag}-lr{lr:g}-s{seed}")


def budget_args(size: int, epochs: int, seed: int, lr: float, quick: bool) -> List[str]:
    """The trainer flags of one run of the full budget: recipe, lr, seed, the test split
    scored once at the end, validation every VAL_EVERY steps."""
    return recipe(size) + ["--epochs", "1" if quick else str(epochs), "--seed", str(seed), "--lr", f"{lr:g}",
                           "--test-dir", "test", "--val-every-steps", str(VAL_EVERY),
                           "--warmup-steps", str(warmup_steps(QUICK_STEPS if quick else EPOCH_STEPS * epochs))]


def sweep(runner: Runner, group: str, method: str, arch: str, size: int, epochs: int) -> float:
    """The method's lr: seed 0 at the full budget per lr, the best final validation top-1;
    the grid is extended past an edge that wins (up to MAX_EXTENSIONS steps)."""
    lrs = list(SWEEP_LRS[:1] if runner.quick else SWEEP_LRS)
    name, *flags = arch.split()  # a model name, then any trainer flags of this method

    def run(lrs_):
        runner.run_all([(run_folder(runner, group, method, lr, SEEDS[0]), name,
                         budget_args(size, epochs, SEEDS[0], lr, runner.quick) + flags) for lr in lrs_])

    run(lrs)
    while not runner.quick:
        scores = sweep_table(runner, group, method)
        if all(scores.get(lr, -math.inf) < CHANCE_MARGIN for lr in lrs):
            break  # diverged or at chance everywhere: the failure is not the lr (benchmarks/plain_collapse.py)
        more = lr_past_winning_edge({lr: scores.get(lr, -math.inf) for lr in lrs}, SWEEP_LRS, MAX_EXTENSIONS)
        if more is None:
            break
        lrs = sorted(lrs + [more])
        run(lrs)
    scores = sweep_table(runner, group, method)
    best = best_lr({lr: scores.get(lr, -math.inf) for lr in lrs})
    return lrs[0] if best is None else best  # every run failed: the table reports the lowest lr's failure


def sweep_table(runner: Runner, group: str, method: str, tag: str = "final") -> Dict[float, float]:
    """lr -> final validation top-1 of the seed-0 runs (-inf: diverged)."""
    folder = runner.folder(group, method)
    out = {}
    prefix, suffix = f"{tag}-lr", f"-s{SEEDS[0]}"
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            if name.startswith(prefix) and name.endswith(suffix):
                res = runner.result(os.path.join(folder, name))
                if res is not None:
                    out[float(name[len(prefix):-len(suffix)])] = _score(res)
    return dict(sorted(out.items()))


def final_runs(runner: Runner, group: str, method: str, arch: str, size: int, lr: float, epochs: int,
               extra: Sequence[str] = (), tag: str = "final") -> List[dict]:
    """Every seed at ``lr`` (the sweep's seed-0 run is one of them: it is not run again)."""
    seeds = SEEDS[:1] if runner.quick else SEEDS
    tasks = [(run_folder(runner, group, method, lr, seed, tag), arch,
              budget_args(size, epochs, seed, lr, runner.quick) + list(extra)) for seed in seeds]
    runner.run_all(tasks)
    return [runner.result(t[0]) for t in tasks]


def _curve(folder: str) -> List[tuple]:
    """(training step, validation top-1) points of a run."""
    path = os.path.join(folder, "curve.csv")
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [(int(r["step"]), float(r["val_acc1"])) for r in csv.DictReader(f)]


def _mean_sd(values: List[float]) -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} +- {sd:.2f} (n={len(values)})"


def summarize(runner: Runner, group: str, rows: List[dict], png: Optional[str]) -> str:
    lines = ["| method | model | lr (val sweep) | sweep val top-1 by lr | test top-1, mean +- sd | "
             "val top-1 | train images/s | wall min/run |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        done = [x for x in r["runs"] if x and not x.get("failed")]
        failed = [x for x in r["runs"] if x and x.get("failed")]
        sweep_txt = ", ".join(f"{lr:g}: {v:.1f}" if math.isfinite(v) else f"{lr:g}: diverged"
                              for lr, v in r["sweep"].items())
        ips = [x["train_images_per_s"] for x in done if "train_images_per_s" in x]
        wall = [x["wall_s"] / 60 for x in done if "wall_s" in x]
        lines.append(
            f"| {r['method']} | `{r['arch']}` | {r['lr']:g} | {sweep_txt} | "
            f"{_mean_sd([x['test_acc1'] for x in done if 'test_acc1' in x])}"
            f"{f', {len(failed)} diverged' if failed else ''} | {_mean_sd([x['val_acc1'] for x in done])} | "
            f"{f'{statistics.median(ips):.0f}' if ips else '-'} | {f'{statistics.median(wall):.1f}' if wall else '-'} |" if done else
            f"| {r['method']} | `{r['arch']}` | {r['lr']:g} | {sweep_txt} | "
            f"{'diverged at every lr' if r['sweep'] and not any(map(math.isfinite, r['sweep'].values())) else 'not finished'}"
            f" | | | |")
    table = "\n".join(lines)
    os.makedirs(runner.folder(group), exist_ok=True)
    with open(runner.folder(group, "summary.json"), "w") as f:
        json.dump([dict(r, sweep={lr: v if math.isfinite(v) else None for lr, v in r["sweep"].items()})
                   for r in rows], f, indent=1)  # null: diverged (strict JSON has no -inf)
    if png:
        _plot(runner, group, rows, png)
    return table


def _plot(runner: Runner, group: str, rows: List[dict], png: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for r in rows:
        # finished runs only: a seed that diverged has a shorter curve, and would cut the
        # mean of the others short (it is named in the label instead)
        results = [runner.result(f) for f in r["folders"]]
        curves = [c for f, res in zip(r["folders"], results) if res and not res.get("failed") and (c := _curve(f))]
        if not curves:
            continue
        diverged = sum(1 for res in results if res and res.get("failed"))
        n = min(len(c) for c in curves)
        xs = [curves[0][i][0] * 128 / 1000 for i in range(n)]  # thousands of training images
        cols = [[c[i][1] for c in curves] for i in range(n)]
        mean = [statistics.mean(c) for c in cols]
        label = f"{r['method']} (lr {r['lr']:g}, {len(curves)} seed{'s' if len(curves) > 1 else ''}"
        line, = ax.plot(xs, mean, marker="o", label=label + (f", {diverged} diverged)" if diverged else ")"))
        ax.fill_between(xs, [min(c) for c in cols], [max(c) for c in cols], alpha=0.2, color=line.get_color())
    ax.set_xlabel("training images seen (thousands; one epoch = 54)")
    ax.set_ylabel("validation top-1 (%)")
    ax.set_title(f"Fashion-MNIST, {group}: validation top-1 (band: min-max over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    os.makedirs(os.path.dirname(png), exist_ok=True)
    fig.savefig(png, dpi=120)
    plt.close(fig)


def run_group(runner: Runner, group: str, table_only: bool) -> str:
    """Every method's lr sweep, then its seeds at the chosen lr. The methods run side by
    side, ``runner.jobs`` at a time, each one run after another: a sweep's extensions are
    serial, so one method at a time would leave all jobs but one idle while it extends."""
    cfg = GROUPS[group]

    def method_runs(item):
        method, arch = item
        lr = sweep(serial, group, method, arch, cfg["size"], cfg["epochs"])
        if not all(v < CHANCE_MARGIN for v in sweep_table(runner, group, method).values()):
            final_runs(serial, group, method, arch.split()[0], cfg["size"], lr, cfg["epochs"], arch.split()[1:])

    if not table_only:
        serial = runner.serial()
        with ThreadPoolExecutor(runner.jobs) as pool:
            list(pool.map(method_runs, cfg["methods"].items()))
    rows = []
    for method, arch in cfg["methods"].items():
        scores = sweep_table(runner, group, method)
        # every run failed: the table reports the lowest lr's failure
        lr = best_lr(scores) or (min(scores) if scores else float("nan"))
        folders = [run_folder(runner, group, method, lr, s) for s in SEEDS]
        rows.append(dict(method=method, arch=arch, lr=lr, sweep=scores, runs=[runner.result(f) for f in folders],
                         folders=folders))
    return summarize(runner, group, rows, None if runner.quick else os.path.join(ROOT, "docs", f"fashion_{group}_curves.png"))


def run_ablations(runner: Runner, table_only: bool) -> str:
    """One change at a time from RescaleNet-20 with gradient clipping at its chosen lr
    (ABLATION_BASE: without clipping one seed in three diverges at RescaleNet-20's chosen
    lr, which would blur every row); the unchanged row is that method's own runs."""
    cfg = GROUPS["cifar20"]
    base, base_flags = ABLATION_BASE
    lr = best_lr(sweep_table(runner, "cifar20", base))
    if lr is None:
        raise SystemExit(f"bench_fashion: run --group cifar20 first: the ablations use the lr chosen for {base!r}")
    seeds = SEEDS[:1] if runner.quick else SEEDS
    rows, tasks = [], []
    for name, extra in ABLATIONS.items():
        tag = "final" if not extra else "ablation-" + "_".join(e.strip("-").replace("_", "-") for e in extra)
        group, method = ("cifar20", base) if not extra else ("ablations", "RescaleNet-20")
        folders = [run_folder(runner, group, method, lr, s, tag) for s in SEEDS]
        tasks += [(folder, "rescalenet_cifar20",
                   budget_args(cfg["size"], cfg["epochs"], seed, lr, runner.quick) + list(extra) + base_flags)
                  for folder, seed in zip(folders, SEEDS) if seed in seeds]
        rows.append(dict(method=name, arch=" ".join(["rescalenet_cifar20", *extra, *base_flags]), lr=lr, sweep={},
                         folders=folders))
    if not table_only:
        # seed-major, one pool: every row gets its first seeds before any row its last, and no
        # slot idles between rows
        runner.run_all(sorted(tasks, key=lambda t: t[0].rsplit("-s", 1)[-1]))
    for row in rows:
        row["runs"] = [runner.result(f) for f in row["folders"]]
    return summarize(runner, "ablations", rows, None)


def run_depth(runner: Runner, table_only: bool, lr: float = DEPTH["lr"], archs: Sequence[str] = DEPTH["archs"],
              methods: Sequence[str] = DEPTH["methods"]) -> str:
    """Depth at one lr and a fixed step budget: does the loss fall, explode or stall?
    The table's lr is DEPTH["lr"] for every method; another lr (a fairness check for one
    method at one depth) writes its runs under depth/lr{LR}/ beside the table's."""
    lines = [f"| layers | method | train loss (mean over the {DEPTH['steps']} steps) | val loss after {DEPTH['steps']} "
             f"steps | val top-1 after {DEPTH['steps']} steps | status |", "|---|---|---|---|---|---|"]
    size = GROUPS["cifar20"]["size"]
    root = ("depth",) if lr == DEPTH["lr"] else ("depth", f"lr{lr:g}")
    for arch in archs:
        tasks = []
        for method in methods:
            name, *flags = _CIFAR_METHODS[method].format(a=arch).split()  # a model, then its trainer flags
            args = recipe(size) + ["--epochs", "1", "--seed", "0", "--lr", f"{lr:g}", "--batch-size",
                                   str(DEPTH["batch"]), "--limit-train-batches", str(DEPTH["steps"]),
                                   "--warmup-steps", str(warmup_steps(DEPTH["steps"]))] + flags
            tasks.append((runner.folder(*root, arch, method), name, args))
        results = [runner.result(t[0]) for t in tasks] if table_only else runner.run_all(tasks)
        for method, res in zip(methods, results):
            if res is None:
                lines.append(f"| {arch[5:]} | {method} | | | | not run |")
            elif res.get("failed"):
                step = re.search(r"training step (\d+)", res.get("reason", ""))
                lines.append(f"| {arch[5:]} | {method} | | | | " + (
                    f"diverged (loss NaN at step {step.group(1)})" if res.get("diverged") and step else
                    f"{'diverged' if res.get('diverged') else 'failed'}: {res.get('reason', '')[:90]}") + " |")
            else:
                # the validation top-1 decides: the mean training loss includes the first steps
                acc = res.get("val_acc1", float("nan"))
                status = "learned" if acc >= CHANCE_MARGIN else "stalled at chance (10 classes: 10 %)"
                lines.append(f"| {arch[5:]} | {method} | {res.get('train_loss', float('nan')):.3f} | "
                             f"{res.get('val_loss', float('nan')):.3f} | {acc:.2f} | {status} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--group", required=True, choices=list(GROUPS) + ["ablations", "depth"])
    p.add_argument("--data", default=os.path.join(ROOT, "data", "fashion_mnist"),
                   help="the ImageFolder copy written by `make data` (train/, val/, test/)")
    p.add_argument("--output", default=os.path.join(ROOT, "runs", "fashion"))
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (each on one thread)")
    p.add_argument("--table", action="store_true", help="only print the table of the finished runs")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 20 steps and 2 eval batches per run, one lr, one seed, in OUTPUT-quick/")
    depth = p.add_argument_group("--group depth only: one method or depth at another lr (a fairness check)")
    depth.add_argument("--lr", type=float, default=DEPTH["lr"],
                       help=f"the lr of every run (default {DEPTH['lr']:g}, the table's; another writes under depth/lr<LR>/)")
    depth.add_argument("--layers", nargs="+", type=int, choices=[int(a[5:]) for a in DEPTH["archs"]],
                       default=[int(a[5:]) for a in DEPTH["archs"]])
    depth.add_argument("--methods", nargs="+", choices=DEPTH["methods"], default=list(DEPTH["methods"]),
                       metavar="METHOD", help=f"default: all of {', '.join(DEPTH['methods'])}")
    args = p.parse_args(argv)
    if args.group != "depth" and (args.lr != DEPTH["lr"] or args.layers != p.get_default("layers")
                                  or args.methods != p.get_default("methods")):
        p.error("--lr, --layers and --methods apply to --group depth only (the other groups sweep the lr)")
    if not (args.lr > 0 and math.isfinite(args.lr)):
        p.error(f"--lr must be positive, got {args.lr:g}")
    for split in ("train", "val", "test"):
        if not os.path.isdir(os.path.join(args.data, split)):
            raise SystemExit(f"bench_fashion: {os.path.join(args.data, split)!r} is missing: run `make data` "
                             "(Fashion-MNIST from Debian's dataset-fashion-mnist) or pass --data DIR")
    out = args.output + ("-quick" if args.quick else "")
    runner = Runner(os.path.abspath(args.data), out, args.jobs, args.quick)
    if args.group == "ablations":
        table = run_ablations(runner, args.table)
    elif args.group == "depth":
        table = run_depth(runner, args.table, args.lr, [f"cifar{n}" for n in args.layers], args.methods)
    else:
        table = run_group(runner, args.group, args.table)
    at = f", lr {args.lr:g}" if args.group == "depth" else ""
    print(f"\nFashion-MNIST, group {args.group}{at} ({out}):\n{table}", flush=True)


if __name__ == "__main__":
    main()
