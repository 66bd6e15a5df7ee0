"""Shared helpers of the benchmark scripts: machine description, markdown tables,
appending a result block (with the exact command) to docs/results.md, the lr sweeps'
edge rule."""
from __future__ import annotations

import datetime
import math
import os
import platform
import shlex
import sys
from typing import List, Mapping, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "docs", "results.md")
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    desc = f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
    if torch.cuda.is_available():
        desc += f", GPU {torch.cuda.get_device_name(0)}"
    return desc


def table(header: Sequence[str], rows: List[Sequence]) -> str:
    def fmt(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def command() -> str:
    return "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:])


def append_result(title: str, body: str, notes: str = "") -> None:
    """Append a dated block to docs/results.md."""
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    block = [f"\n### {title} ({stamp})\n", f"Command: `{command()}`  ", f"Machine: {machine()}\n", body, ""]
    if notes:
        block += [notes, ""]
    new = not os.path.exists(RESULTS)
    with open(RESULTS, "a") as f:
        if new:
            f.write("# Classification: measured results\n\nEvery block below was appended by the "
                    "benchmark script named in its command line (`benchmarks/`).\n")
        f.write("\n".join(block))
    print(f"appended to {os.path.relpath(RESULTS, ROOT)}")


def seeded_batches(data: str, size: int, seed: int, batch: int):
    """Training batches ``(x, y)`` of the Fashion-MNIST ImageFolder at ``data`` in a seeded
    order, with bench_fashion's augmentation (padded crop + flip) and normalization: the
    first steps of a run, for the probes that replay them."""
    import torch

    from rescalenet import fashion_mnist
    from rescalenet.training import image_folder, image_transform

    dataset = image_folder(os.path.join(data, "train"), image_transform(
        True, size, "crop-flip", in_chans=1, mean=[fashion_mnist.MEAN], std=[fashion_mnist.STD]))
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    for start in range(0, len(order) - batch + 1, batch):
        idx = order[start:start + batch]
        yield torch.stack([dataset[int(i)][0] for i in idx]), torch.tensor([dataset.targets[int(i)] for i in idx])


def swept_lrs(folder: str, seed: int) -> List[float]:
    """The lrs of the finished runs ``folder/lr<lr>_s<seed>/result.json`` (the run folders
    of the sweeping benchmarks), sorted."""
    suffix = f"_s{seed}"
    names = os.listdir(folder) if os.path.isdir(folder) else []
    return sorted(float(n[2:-len(suffix)]) for n in names if n.startswith("lr") and n.endswith(suffix)
                  and os.path.isfile(os.path.join(folder, n, "result.json")))


def lr_past_winning_edge(scores: Mapping[float, float], first_grid: Sequence[float],
                         max_extensions: int, extend_up: bool = True) -> Optional[float]:
    """The next lr of a sweep, one factor 2 past the edge that wins, so that no method
    is held at the edge of its grid; None when the first grid is not finished, the best
    lr is inside what was tried, or ``max_extensions`` lrs beyond the first grid were run.

    ``scores`` maps every lr tried to its score, higher is better, ``-inf`` for a run
    that failed (diverged). Ties go to the lower lr, so when every run failed the sweep
    goes down; a failed top edge never sends it up. Every lr sweep of ``benchmarks/``
    (classification, detection, video, translation) extends its grid by this rule;
    ``extend_up=False`` only ever goes down (a winning top edge ends the sweep)."""
    tried = sorted(scores)
    if any(lr not in scores for lr in first_grid) or len(tried) - len(set(first_grid)) >= max_extensions:
        return None
    best = max(tried, key=lambda lr: (scores[lr], -lr))
    if best == tried[-1] and math.isfinite(scores[best]):
        return best * 2 if extend_up else None
    if best == tried[0]:
        return best / 2
    return None


def best_lr(scores: Mapping[float, float]) -> Optional[float]:
    """The lr of the best score among the runs that did not fail (``-inf``), ties to the
    lower lr; None when every run failed or none is recorded."""
    ok = [lr for lr, score in scores.items() if math.isfinite(score)]
    return max(ok, key=lambda lr: (scores[lr], -lr)) if ok else None


def chosen_sweep_lr(scores: Mapping[float, float], first_grid: Sequence[float],
                    max_extensions: int, extend_up: bool = True) -> Optional[float]:
    """The sweep's lr: the best score (ties to the lower lr) among the runs that did not
    fail; None until the sweep is done (its first grid and every extension
    :func:`lr_past_winning_edge` asks for), or when every run failed."""
    if any(lr not in scores for lr in first_grid) or \
            lr_past_winning_edge(scores, first_grid, max_extensions, extend_up) is not None:
        return None
    return best_lr(scores)
