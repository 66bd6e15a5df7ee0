"""Translation quality on real text: rescale_transformer against LayerNorm and against
the normalization-free Transformers, through fairseq-train / fairseq-generate.

Data: the English->German gettext corpus of this machine, built once by

    python -m projects.translation.prepare_gettext --locale-dir /usr/share/locale --lang de \\
        --output data/gettext_en_de

Methods (``METHODS``; the same dimensions, data, recipe and budget for each):

    postln   fairseq ``transformer`` (post-LN, its default)
    preln    fairseq ``transformer --encoder-normalize-before --decoder-normalize-before``
    dyt      ``dyt_transformer``: every LayerNorm of the pre-LN model replaced by DyT
    noln     ``noln_transformer``: every LayerNorm replaced by the identity, nothing else
    rescale  ``rescale_transformer`` (this project)

Protocol:

1. *sweep*: every method at every ``--lrs`` with the first seed; each run is scored
   by its final validation loss (the valid split, never test); while a method's best
   lr sits at an edge of what it tried, the grid is extended by a factor 2 past that
   edge (``--max-extensions`` times at most), so no method is held at the grid's edge;
2. *seeds*: every method at its best sweep lr with the other ``--seeds``;
3. *table*: test BLEU (sacreBLEU 13a on detokenized output against the raw
   references, beam 5) mean +- sd over the seeds at the chosen lr, updates to reach
   ``--target-loss`` on valid, median training tokens/s, and a PNG of valid loss
   against updates (one line per method, mean over seeds).

Every run writes ``runs/translation_real/<tag>/<method>/lr<lr>_s<seed>/result.json``
as soon as it ends (train.log and gen.log next to it) and is skipped when the script
is run again, so the table can be completed over several sittings. A run that
diverges (fairseq stops on NaN/Inf gradients) is recorded as diverged. One thread
per fairseq command (``--threads``).

    python benchmarks/bench_translation_real.py --quick                # smoke test, ~2 minutes
    python benchmarks/bench_translation_real.py                        # the core table (CPU budget: see --help)
    python benchmarks/bench_translation_real.py --phase table          # print the tables of what is done

Depth (6+6, 18+18, 50+50 layers, the same width and budget): one seed, each method
started at the lr its 3+3 sweep chose (``--method-lrs``); a method that fails there
goes a factor 2 down, twice at most, and one that trains keeps its lr
(``--no-extend-up``). A run fails when it diverged, when its final valid loss is no
lower than its first one ("no progress"), or with ``--min-gain BITS`` when it ends less
than BITS below the corpus's word-frequency plateau ("stalled",
``word_frequency_plateau``). ``--save-every N`` checkpoints every N updates, so a run
stopped in the middle resumes there when the command is run again:

    python benchmarks/bench_translation_real.py --layers 18 --tag depth18 --seeds 1 --max-extensions 2 \
        --no-extend-up --min-gain 1 --target-loss 6.5 --save-every 100 \
        --method-lrs postln=2e-3 preln=4e-3 dyt=8e-3 noln=4e-3 rescale=4e-3

At 50+50 (``--layers 50 --tag depth50``, the same options) a run takes about two hours
on the 2-core machine; ``--stop-stalled`` stops a failing one at half its budget
(``hopeless_at``: from half the budget on, a run that at its own pace would still end
"stalled"), and ``--phase table --stop-stalled`` shows where the rule stops, or would
have stopped, every run of a table.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import re
import shutil
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import ROOT, chosen_sweep_lr, lr_past_winning_edge, swept_lrs, table  # noqa: E402

from projects.translation import toy_task  # noqa: E402

RUNS = os.path.join(ROOT, "runs", "translation_real")

# name: (label, arch, extra fairseq-train arguments)
METHODS: Dict[str, tuple] = {
    "postln": ("Transformer post-LN (fairseq)", "transformer", []),
    "preln": ("Transformer pre-LN (fairseq)", "transformer",
              ["--encoder-normalize-before", "--decoder-normalize-before"]),
    "dyt": ("DyT (pre-LN, Zhu et al. 2025)", "dyt_transformer", []),
    "noln": ("LayerNorm removed, nothing else", "noln_transformer", []),
    "rescale": ("rescale_transformer (this project)", "rescale_transformer", []),
    # the change the diagnosis kept (benchmarks/translation_diagnose.py); not in the default table yet
    "rescale_mlr10": ("rescale_transformer --rescale-multiplier-lr 10", "rescale_transformer",
                      ["--rescale-multiplier-lr", "10"]),
    # the L-counting ablation: one chain over both stacks, or one per sublayer type
    "rescale_count_model": ("rescale_transformer --rescale-count model", "rescale_transformer",
                            ["--rescale-count", "model"]),
    "rescale_count_type": ("rescale_transformer --rescale-count type", "rescale_transformer",
                           ["--rescale-count", "type"]),
    # DyT with room to grow: at 18+18 the residual stream outgrows 2 / alpha and every DyT
    # saturates at the paper's alpha init 0.5 (translation_diagnose.py trained)
    "dyt_alpha01": ("DyT, alpha init 0.1", "dyt_transformer", ["--dyt-alpha-init", "0.1"]),
}
DEFAULT_METHODS = ["postln", "preln", "dyt", "noln", "rescale"]
LABEL_SMOOTHING = 0.1  # of every run's criterion, and of the word-frequency plateau


@dataclass
class Config:
    """Model size and budget of one table (``--tag`` names it)."""

    layers: int = 3
    dim: int = 128
    ffn: int = 512
    heads: int = 4
    max_update: int = 1200
    warmup: int = 200
    max_tokens: int = 2048
    dropout: float = 0.1
    validate_every: int = 100
    # the first grid, run in this order (lr-major); extended past a winning edge
    lrs: List[float] = field(default_factory=lambda: [1e-3, 2e-3])
    seeds: List[int] = field(default_factory=lambda: [1, 2, 3])
    max_extensions: int = 4  # a factor 2 each (up to 16x the first grid's top)
    # a method's own first grid in place of ``lrs`` (the depth tables start each method
    # at the lr its 3+3 sweep chose)
    method_lrs: Dict[str, List[float]] = field(default_factory=dict)
    # False: extend only down from a failed lr; a method that trains at its first lr keeps
    # it (the depth tables: the question there is which methods train, not their best lr)
    extend_up: bool = True
    # a valid loss the run must end below, or it fails like a diverged one ("stalled"):
    # the word-frequency plateau of the corpus minus --min-gain (the depth tables: a run
    # that learned the target word frequencies and nothing else has not trained)
    must_beat: Optional[float] = None
    # updates between the checkpoints a re-run resumes an interrupted run from (0: none,
    # an interrupted run starts again); a multiple of validate_every, since fairseq
    # validates at every mid-epoch save
    save_every: int = 0
    # stop a run once it cannot end below must_beat at its own pace (``hopeless_at``), so a
    # failed 50+50 run costs half a budget rather than a whole one
    stop_stalled: bool = False

    def grid(self, method: str) -> List[float]:
        """The first grid of ``method``'s sweep."""
        return self.method_lrs.get(method, self.lrs)

    def model_args(self) -> List[str]:
        args = []
        for side in ("encoder", "decoder"):
            args += [f"--{side}-layers", str(self.layers), f"--{side}-embed-dim", str(self.dim),
                     f"--{side}-ffn-embed-dim", str(self.ffn), f"--{side}-attention-heads", str(self.heads)]
        return args + ["--share-all-embeddings"]


QUICK = Config(layers=1, dim=32, ffn=64, heads=2, max_update=10, warmup=5, validate_every=5,
               lrs=[1e-3], seeds=[1], max_extensions=0)


def _lr_name(lr: float) -> str:
    return f"{lr:g}"


def run_dir(tag: str, method: str, lr: float, seed: int) -> str:
    return os.path.join(RUNS, tag, method, f"lr{_lr_name(lr)}_s{seed}")


def load_result(tag: str, method: str, lr: float, seed: int) -> Optional[dict]:
    path = os.path.join(run_dir(tag, method, lr, seed), "result.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


# ---------------------------------------------------------------- log parsing

_VALID = re.compile(r"\| valid on 'valid' subset \| loss ([0-9.naninf]+) \| nll_loss ([0-9.naninf]+).*?\| num_updates (\d+)")
_WPS = re.compile(r"train_inner \|.*?wps=([0-9.]+)")


def valid_curve(log: str) -> List[List[float]]:
    """``[[num_updates, loss, nll_loss], ...]`` of every validation in a fairseq-train log,
    by update; a validation repeated by a resumed sitting counts once (the later one)."""
    by_update = {int(u): [int(u), float(loss), float(nll)] for loss, nll, u in _VALID.findall(log)}
    return [by_update[u] for u in sorted(by_update)]


RESUMED = "=== bench_translation_real: resumed from checkpoint_last.pt ==="
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) \|", re.M)


def sittings_seconds(log: str) -> float:
    """Seconds between the first and the last time stamp of each sitting of a train.log
    (sittings are separated by ``RESUMED``), summed: the time of the sittings before the
    current one, whose process was killed before it could say."""
    total = 0.0
    for part in log.split(RESUMED):
        stamps = [datetime.datetime.strptime(t, "%Y-%m-%d %H:%M:%S") for t in _STAMP.findall(part)]
        if stamps:
            total += (stamps[-1] - stamps[0]).total_seconds()
    return total


def median_wps(log: str) -> Optional[float]:
    """Median training target tokens/s over the logged intervals, the first one left out
    (it includes start-up and the AddBias calibration passes)."""
    wps = [float(w) for w in _WPS.findall(log)][1:]
    return statistics.median(wps) if wps else None


def read_hypotheses(generate_log: str) -> List[str]:
    """The detokenized hypotheses (``D-<id>`` lines) of fairseq-generate, in test-set order."""
    hyps = {}
    for line in generate_log.splitlines():
        if line.startswith("D-"):
            head, _score, *text = line.split("\t")
            hyps[int(head[2:])] = text[0] if text else ""
    return [hyps[i] for i in sorted(hyps)]


# ---------------------------------------------------------------- stopping a stalled run

# validations the pace of a run is measured over (300 updates at the depth tables' 100)
PACE_VALIDATIONS = 3


def hopeless_at(curve: Sequence[Sequence[float]], cfg: Config) -> Optional[int]:
    """The first validation, from half of ``cfg.max_update`` on, at which the run sits at
    or above ``cfg.must_beat`` and would still end there if it went on at its pace of the
    last ``PACE_VALIDATIONS`` validations to the end of its budget; None when there is none
    (or no ``must_beat``). The straight line is optimistic for a loss curve, which flattens
    as it goes, so the rule stops only runs that would have ended "stalled" or "no progress"
    anyway: replayed on every full-length run of the 6+6 and 18+18 tables it stops each
    failed run at update 600 and no run that trained (``--phase table --stop-stalled``)."""
    if cfg.must_beat is None:
        return None
    for i in range(PACE_VALIDATIONS, len(curve)):
        update, loss = curve[i][0], curve[i][1]
        then, before = curve[i - PACE_VALIDATIONS][0], curve[i - PACE_VALIDATIONS][1]
        if update < cfg.max_update / 2 or update >= cfg.max_update or loss < cfg.must_beat:
            continue
        if loss + (loss - before) / (update - then) * (cfg.max_update - update) >= cfg.must_beat:
            return int(update)
    return None


# ---------------------------------------------------------------- one run

def train_and_score(data: str, lang: str, tag: str, cfg: Config, method: str, lr: float, seed: int,
                    threads: int) -> dict:
    """fairseq-train then fairseq-generate on test; writes and returns result.json."""
    import sacrebleu

    label, arch, extra = METHODS[method]
    out = run_dir(tag, method, lr, seed)
    log_path = os.path.join(out, "train.log")
    resume = cfg.save_every > 0 and os.path.exists(os.path.join(out, "checkpoint_last.pt"))
    earlier_seconds = 0.0
    if resume:  # an interrupted run: fairseq-train goes on from checkpoint_last.pt
        with open(log_path) as f:
            earlier_seconds = sittings_seconds(f.read())
        with open(log_path, "a") as f:
            f.write(f"\n{RESUMED}\n")
    elif os.path.isdir(out):  # an interrupted run with nothing to resume from: start again
        shutil.rmtree(out)
    os.makedirs(out, exist_ok=True)
    data_bin = os.path.join(data, "data-bin")
    cmd = toy_task.fairseq_cli("fairseq-train") + [
        data_bin, "--user-dir", toy_task.PLUGIN_DIR, "--cpu", "--arch", arch, *cfg.model_args(), *extra,
        "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--clip-norm", "0.0",
        "--lr", str(lr), "--lr-scheduler", "inverse_sqrt", "--warmup-updates", str(cfg.warmup),
        "--warmup-init-lr", "1e-07", "--dropout", str(cfg.dropout), "--weight-decay", "0.0",
        "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", str(LABEL_SMOOTHING),
        "--max-tokens", str(cfg.max_tokens), "--max-update", str(cfg.max_update), "--seed", str(seed),
        "--save-dir", out, "--no-epoch-checkpoints", "--save-interval", "100000",
        "--validate-interval", "100000", "--validate-interval-updates", str(cfg.validate_every),
        "--num-workers", "0", "--log-format", "simple", "--log-interval", "10", "--no-progress-bar",
    ]
    if cfg.save_every:
        cmd += ["--save-interval-updates", str(cfg.save_every), "--keep-interval-updates", "1"]
    result = {"tag": tag, "method": method, "label": label, "arch": arch, "lr": lr, "seed": seed,
              "config": asdict(cfg), "train_command": cmd}
    stopped_at: List[int] = []  # the update ``stop`` ended the run at

    def stop(text: str) -> bool:
        update = hopeless_at(valid_curve(text), cfg)
        stopped_at.extend([] if update is None else [update])
        return update is not None

    start = time.time()
    try:
        log = toy_task.run(cmd, env=toy_task.cli_env(threads), timeout=24 * 3600, log=log_path, append=resume,
                           stop=stop if cfg.stop_stalled else None)
        result["status"] = "done"
    except RuntimeError:
        with open(log_path) as f:
            log = f.read()
        if "FloatingPointError" not in log and "nan" not in log.lower():
            raise
        result["status"] = "diverged"
    result["train_seconds"] = round(earlier_seconds + time.time() - start, 1)
    result["sittings"] = log.count(RESUMED) + 1
    result["valid_curve"] = valid_curve(log)
    if stopped_at and result["status"] == "done":  # ended by ``stop``: no test BLEU
        result["status"], result["stopped_at"] = "stopped", stopped_at[0]
        # a validation fairseq logged between the check and the stop is left out
        result["valid_curve"] = [c for c in result["valid_curve"] if c[0] <= stopped_at[0]]
    result["wps"] = median_wps(log)
    finite = [loss for _, loss, _ in result["valid_curve"] if math.isfinite(loss)]
    result["final_valid_loss"] = result["valid_curve"][-1][1] if result["valid_curve"] else None
    if result["status"] == "diverged" or not finite or not math.isfinite(result["final_valid_loss"]):
        result["status"], result["bleu"] = "diverged", None
    elif result["status"] == "stopped":
        result["bleu"] = None
    else:
        gen = toy_task.run(toy_task.fairseq_cli("fairseq-generate") + [
            data_bin, "--user-dir", toy_task.PLUGIN_DIR, "--cpu",
            "--path", os.path.join(out, "checkpoint_last.pt"), "--gen-subset", "test",
            "--beam", "5", "--batch-size", "100", "--post-process", "sentencepiece",
            # the references are at most ~1.2x the source in BPE pieces; without a bound an
            # undertrained model can emit 200 pieces per sentence under beam search
            "--max-len-a", "1.5", "--max-len-b", "10",
        ], env=toy_task.cli_env(threads), timeout=6 * 3600, log=os.path.join(out, "gen.log"))
        with open(os.path.join(data, "raw", f"test.{lang}"), encoding="utf-8") as f:
            refs = [line.rstrip("\n") for line in f]
        hyps = read_hypotheses(gen)
        if len(hyps) != len(refs):
            raise RuntimeError(f"{out}: {len(hyps)} hypotheses for {len(refs)} references in raw/test.{lang}")
        result["bleu"] = round(sacrebleu.corpus_bleu(hyps, [refs]).score, 2)
    with open(os.path.join(out, "result.json"), "w") as f:
        json.dump(result, f, indent=1)
    return result


# ---------------------------------------------------------------- protocol

def _swept_lrs(tag: str, method: str, seed: int) -> List[float]:
    """Every lr ``method`` finished (or diverged) at with the sweep's seed, sorted."""
    return swept_lrs(os.path.join(RUNS, tag, method), seed)


def outcome(r: dict, must_beat: Optional[float] = None) -> str:
    """"diverged" (fairseq stopped on NaN/Inf), "no progress" (it ran to the end, but its
    final valid loss is no lower than at its first validation: it learned nothing, as
    post-LN does past its lr ceiling), "stalled" (its final valid loss is not below
    ``must_beat``), or "done". A run ``hopeless_at`` stopped is judged on the curve it has."""
    if r["status"] not in ("done", "stopped"):
        return r["status"]
    curve = r.get("valid_curve") or []
    if curve and r["final_valid_loss"] >= curve[0][1]:
        return "no progress"
    if must_beat is not None and r["final_valid_loss"] >= must_beat:
        return "stalled"
    return "done"


def status_text(r: dict, must_beat: Optional[float] = None) -> str:
    """``outcome`` and, for a run ``hopeless_at`` stopped, where."""
    stopped = f" (stopped at {r['stopped_at']})" if r["status"] == "stopped" else ""
    return outcome(r, must_beat) + stopped


def word_frequency_plateau(data: str, lang: str, label_smoothing: float = LABEL_SMOOTHING) -> float:
    """The valid loss (label-smoothed cross-entropy, bits per target token, as fairseq
    reports it) of the best model that ignores the source and the target prefix: every
    token predicted with the train split's target frequencies, smoothed as the criterion
    smooths its targets, ``q = (1 - eps - eps_i) p + eps_i`` with ``eps_i = eps / (V - 1)``,
    which minimises that loss. A translation model sits there once it has learned the
    word frequencies; a run that ends there learned nothing else."""
    def tokens(split):
        with open(os.path.join(data, "bpe", f"{split}.{lang}"), encoding="utf-8") as f:
            for line in f:
                yield from line.split() + ["</s>"]

    from fairseq.data import Dictionary

    vocab = Dictionary.load(os.path.join(data, "data-bin", f"dict.{lang}.txt"))
    counts = [0] * len(vocab)
    for t in tokens("train"):
        counts[vocab.index(t)] += 1
    n, v = sum(counts), len(vocab)
    eps_i = label_smoothing / (v - 1)
    neg_log_q = [-math.log((1 - label_smoothing - eps_i) * c / n + eps_i) for c in counts]
    valid = [vocab.index(t) for t in tokens("valid")]
    nll = sum(neg_log_q[i] for i in valid) / len(valid)
    return ((1 - label_smoothing - eps_i) * nll + eps_i * sum(neg_log_q)) / math.log(2)


def _sweep_loss(tag: str, cfg: Config, method: str, lr: float, seed: int) -> float:
    """The final valid loss; inf for a run that failed (``outcome``), so that a failed run
    loses the sweep and a failed single lr sends it down."""
    r = load_result(tag, method, lr, seed)
    return r["final_valid_loss"] if r is not None and outcome(r, cfg.must_beat) == "done" else math.inf


def _sweep_scores(tag: str, cfg: Config, method: str) -> Dict[float, float]:
    """lr -> minus the final valid loss of the method's sweep runs (-inf: diverged)."""
    seed = cfg.seeds[0]
    return {lr: -_sweep_loss(tag, cfg, method, lr, seed) for lr in _swept_lrs(tag, method, seed)}


def next_sweep_lr(tag: str, cfg: Config, method: str) -> Optional[float]:
    """The lr past the edge of the sweep that wins (``_common.lr_past_winning_edge``: a
    diverged run loses; when every lr diverged the low edge wins), or None when the
    first grid is unfinished, the best lr is inside the grid, or ``cfg.max_extensions``
    extensions were run."""
    return lr_past_winning_edge(_sweep_scores(tag, cfg, method), cfg.grid(method), cfg.max_extensions, cfg.extend_up)


def chosen_lr(tag: str, cfg: Config, method: str) -> Optional[float]:
    """The sweep lr with the lowest final valid loss (failed runs out); None until the
    whole sweep of ``method`` (its extensions included) is done."""
    return chosen_sweep_lr(_sweep_scores(tag, cfg, method), cfg.grid(method), cfg.max_extensions, cfg.extend_up)


def check_config(tag: str, cfg: Config) -> None:
    """A tag holds runs of one configuration: written by its first run, refused if it differs."""
    path = os.path.join(RUNS, tag, "config.json")
    mine = {k: v for k, v in asdict(cfg).items() if k not in ("lrs", "seeds", "max_extensions", "method_lrs", "extend_up", "must_beat", "save_every",
                                                               "stop_stalled")}
    if os.path.exists(path):
        with open(path) as f:
            theirs = json.load(f)
        if theirs != mine:
            raise SystemExit(f"error: {os.path.join(RUNS, tag)} holds runs of another configuration "
                             f"({theirs}); give another --tag or the same options")
    else:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            json.dump(mine, f, indent=1)


def run_protocol(args, cfg: Config) -> None:
    check_config(args.tag, cfg)
    seed0 = cfg.seeds[0]
    if args.phase in ("sweep", "all"):
        # lr-major: after each round every method has one more point of its sweep
        width = max(len(cfg.grid(m)) for m in args.methods)
        run_all(args, cfg, [(m, cfg.grid(m)[i], seed0) for i in range(width) for m in args.methods
                            if i < len(cfg.grid(m))], "sweep")
        while True:
            more = [(m, lr, seed0) for m in args.methods if (lr := next_sweep_lr(args.tag, cfg, m)) is not None]
            if not more:
                break
            run_all(args, cfg, more, "sweep extension")
    if args.phase in ("seeds", "all"):
        todo = []
        for m in args.methods:
            lr = chosen_lr(args.tag, cfg, m)
            if lr is None:
                print(f"{m}: its sweep is not finished (or every lr diverged); seeds skipped", flush=True)
            else:
                todo += [(m, lr, s) for s in cfg.seeds[1:]]
        run_all(args, cfg, todo, "seeds")


def run_all(args, cfg: Config, todo: Sequence[tuple], stage: str) -> None:
    todo = [t for t in todo if load_result(args.tag, *t) is None]
    for i, (method, lr, seed) in enumerate(todo, 1):
        print(f"[{stage} {i}/{len(todo)}] {method} lr {_lr_name(lr)} seed {seed}: training "
              f"(log: {os.path.relpath(os.path.join(run_dir(args.tag, method, lr, seed), 'train.log'), ROOT)})",
              flush=True)
        r = train_and_score(args.data, args.lang, args.tag, cfg, method, lr, seed, args.threads)
        print(f"    {r['status']}: final valid loss {r['final_valid_loss']}, BLEU {r['bleu']}, "
              f"{r['wps']} tokens/s, {r['train_seconds']:.0f} s", flush=True)


def updates_to_reach(curve: Sequence[Sequence[float]], target: float) -> Optional[int]:
    return next((int(u) for u, loss, _ in curve if loss <= target), None)


def _mean_sd(values: Sequence[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} +- {statistics.stdev(values):.2f}"


def finished_runs(tag: str, methods: Sequence[str]) -> List[dict]:
    runs = []
    for m in methods:
        folder = os.path.join(RUNS, tag, m)
        for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            path = os.path.join(folder, name, "result.json")
            if os.path.exists(path):
                with open(path) as f:
                    runs.append(json.load(f))
    return runs


def print_tables(args, cfg: Config) -> None:
    if cfg.must_beat is not None:
        print(f"\nword-frequency plateau of {args.data}: valid loss "
              f"{cfg.must_beat + args.min_gain:.3f}; a run ending at {cfg.must_beat:.3f} or above is 'stalled'")
    print(f"\n### Every finished run of {args.tag}\n")
    header = ["method", "lr", "seed", "status", "final valid loss", "test BLEU",
              f"updates to valid loss {args.target_loss}", "train tokens/s", "train s"]
    rows = []
    for r in finished_runs(args.tag, args.methods):
        rows.append([r["method"], _lr_name(r["lr"]), r["seed"], status_text(r, cfg.must_beat), r["final_valid_loss"],
                     r["bleu"], updates_to_reach(r["valid_curve"], args.target_loss) or "never",
                     f"{r['wps']:.0f}" if r["wps"] else "-", f"{r['train_seconds']:.0f}"])
        if cfg.stop_stalled:  # where the rule stopped the run, or would have stopped a full-length one
            rows[-1].append(r.get("stopped_at") or hopeless_at(r["valid_curve"], cfg) or "-")
    print(table(header + (["--stop-stalled stops at"] if cfg.stop_stalled else []), rows))
    print(f"\n### Sweep (seed {cfg.seeds[0]}): final valid loss (label-smoothed), lowest = chosen\n")
    rows = []
    lrs = sorted(set().union(*(set(cfg.grid(m)) | set(_swept_lrs(args.tag, m, cfg.seeds[0])) for m in args.methods)))
    for m in args.methods:
        row = [m]
        for lr in lrs:
            r = load_result(args.tag, m, lr, cfg.seeds[0])
            status = None if r is None else outcome(r, cfg.must_beat)
            row.append("-" if r is None else (status_text(r, cfg.must_beat) if status != "done" else f"{r['final_valid_loss']:.3f}"))
        rows.append(row)
    print(table(["method"] + [f"lr {_lr_name(lr)}" for lr in lrs], rows))

    print(f"\n### Test BLEU at the chosen lr, valid loss <= {args.target_loss} reached after\n")
    rows, curves, stalled = [], {}, {}
    for m in args.methods:
        lr = chosen_lr(args.tag, cfg, m)
        results = [] if lr is None else [r for s in cfg.seeds if (r := load_result(args.tag, m, lr, s))]
        done = [r for r in results if outcome(r, cfg.must_beat) == "done"]
        reach = [updates_to_reach(r["valid_curve"], args.target_loss) for r in done]
        wps = [r["wps"] for r in results if r["wps"]]
        rows.append([
            m, "-" if lr is None else _lr_name(lr), f"{len(done)}/{len(cfg.seeds)}",
            _mean_sd([r["bleu"] for r in done]),
            _mean_sd([r["final_valid_loss"] for r in done]),
            ", ".join("never" if u is None else str(u) for u in reach) or "-",
            f"{statistics.median(wps):.0f}" if wps else "-",
        ])
        if done:
            curves[m] = done
        else:  # a method that failed everywhere: the curve of its longest run, if it has one
            failed = [r for r in (load_result(args.tag, m, lr, cfg.seeds[0]) for lr in _swept_lrs(args.tag, m, cfg.seeds[0]))
                      if r is not None and r.get("valid_curve")]
            if failed:
                stalled[m] = max(failed, key=lambda r: (len(r["valid_curve"]), -r["final_valid_loss"]))
    print(table(["method", "lr", "seeds done", "test BLEU", "final valid loss",
                 f"updates to valid loss {args.target_loss}", "train tokens/s (median)"], rows))
    if (curves or stalled) and args.plot:
        plateau = None if cfg.must_beat is None else cfg.must_beat + args.min_gain
        # swept, but not one validation to draw: diverged within the first 100 updates
        diverged = {m: "diverged at every lr" if next_sweep_lr(args.tag, cfg, m) is None else "diverged, sweep under way"
                    for m in args.methods if m not in curves and m not in stalled and _swept_lrs(args.tag, m, cfg.seeds[0])}
        plot_curves(curves, args.plot, f"{args.tag}: {cfg.layers}+{cfg.layers} layers, {cfg.dim}-d",
                    stalled={m: (r, status_text(r, cfg.must_beat) + ("; failed at every lr" if next_sweep_lr(args.tag, cfg, m) is None
                                                                   else "; sweep under way"))
                             for m, r in stalled.items()},
                    plateau=plateau, diverged=diverged)


def plot_curves(curves: Dict[str, List[dict]], path: str, title: str,
                stalled: Optional[Dict[str, tuple]] = None, plateau: Optional[float] = None,
                diverged: Optional[Dict[str, str]] = None) -> None:
    """Mean valid loss of each method's finished seeds at its chosen lr; ``stalled``:
    ``{method: (run, outcome)}`` of methods that failed at every lr, drawn dashed;
    ``plateau``: the word-frequency plateau, a dotted line; ``diverged``: ``{method: what
    to say}`` of methods with no curve at all, named in the legend."""
    import logging

    # fairseq's import leaves the root logger at DEBUG, where matplotlib's import and font
    # search print pages
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for m, results in curves.items():
        updates = [u for u, _, _ in results[0]["valid_curve"]]
        losses = [[c[1] for c in r["valid_curve"]] for r in results if len(r["valid_curve"]) == len(updates)]
        mean = [statistics.mean(col) for col in zip(*losses)]
        ax.plot(updates, mean, marker=".", label=f"{METHODS[m][0]} (lr {_lr_name(results[0]['lr'])}, "
                                                 f"{len(losses)} seed{'s' if len(losses) > 1 else ''})")
        if len(losses) > 1:
            ax.fill_between(updates, [min(c) for c in zip(*losses)], [max(c) for c in zip(*losses)], alpha=0.15)
    for m, (r, status) in (stalled or {}).items():
        ax.plot([u for u, _, _ in r["valid_curve"]], [c[1] for c in r["valid_curve"]], linestyle="--",
                label=f"{METHODS[m][0]} (lr {_lr_name(r['lr'])}: {status})")
    if plateau is not None:
        ax.axhline(plateau, color="grey", linestyle=":", label=f"word-frequency plateau ({plateau:.2f})")
    for m in diverged or {}:
        ax.plot([], [], " ", label=f"{METHODS[m][0]}: {diverged[m]}")
    ax.set_xlabel("updates")
    ax.set_ylabel("valid loss (label-smoothed cross-entropy, base 2)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=1)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    print(f"wrote {os.path.relpath(path, ROOT)}")


def check_data(data: str, lang: str) -> None:
    needed = [os.path.join(data, "data-bin", f"dict.{lang}.txt"), os.path.join(data, "raw", f"test.{lang}")]
    missing = [p for p in needed if not os.path.exists(p)]
    if missing:
        raise SystemExit(
            f"error: {missing[0]} not found: --data must be a folder made by\n"
            f"  python -m projects.translation.prepare_gettext --locale-dir /usr/share/locale "
            f"--lang {lang} --output {data}")


def parse_method_lrs(parser: argparse.ArgumentParser, items: Sequence[str]) -> Dict[str, List[float]]:
    """``METHOD=LR[,LR...]`` items -> {method: [lr, ...]}; anything else is refused by name."""
    out = {}
    for item in items:
        method, _, lrs = item.partition("=")
        if method not in METHODS:
            parser.error(f"--method-lrs {item!r}: unknown method {method!r} (choose from {', '.join(METHODS)})")
        try:
            out[method] = [float(x) for x in lrs.split(",")]
            valid = all(lr > 0 and math.isfinite(lr) for lr in out[method])
        except ValueError:
            valid = False
        if not valid:
            parser.error(f"--method-lrs {item!r}: expected {method}=LR[,LR...] with positive numbers")
    return out


def main(argv=None) -> None:
    global RUNS  # --output
    default = Config()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="CPU budget of the default table (1 thread, the 2-core machine "
                                       "of docs/results.md): 20-30 runs (5 methods x 2 lrs, 0-2 extensions each, then 2 more "
                                       "seeds), 1200 updates each: 11-25 minutes a run with generation, 4-10 hours in all; see docs/results.md.")
    p.add_argument("--data", default=os.path.join(ROOT, "data", "gettext_en_de"),
                   help="folder made by projects.translation.prepare_gettext (default: data/gettext_en_de)")
    p.add_argument("--lang", default="de", help="target language of --data (default: de)")
    p.add_argument("--output", default=RUNS,
                   help="folder of the tables (default: runs/translation_real; the recorded runs behind "
                        "docs/results.md are in benchmarks/results/translation_real)")
    p.add_argument("--tag", default=None, help="name of this table's folder under --output "
                                               "(default: core, or quick with --quick)")
    p.add_argument("--methods", nargs="+", default=DEFAULT_METHODS, choices=list(METHODS),
                   help="default: %(default)s")
    p.add_argument("--phase", choices=["all", "sweep", "seeds", "table"], default="all")
    p.add_argument("--layers", type=int, default=default.layers, help="encoder and decoder layers each")
    p.add_argument("--dim", type=int, default=default.dim)
    p.add_argument("--ffn", type=int, default=default.ffn)
    p.add_argument("--heads", type=int, default=default.heads)
    p.add_argument("--max-update", type=int, default=default.max_update)
    p.add_argument("--warmup", type=int, default=default.warmup)
    p.add_argument("--max-tokens", type=int, default=default.max_tokens)
    p.add_argument("--validate-every", type=int, default=default.validate_every)
    p.add_argument("--lrs", type=float, nargs="+", default=default.lrs)
    p.add_argument("--seeds", type=int, nargs="+", default=default.seeds)
    p.add_argument("--method-lrs", nargs="+", default=[], metavar="METHOD=LR[,LR...]",
                   help="a method's own first grid in place of --lrs, e.g. rescale=4e-3 postln=2e-3,1e-3 "
                        "(the depth tables start each method at the lr of its 3+3 sweep)")
    p.add_argument("--max-extensions", type=int, default=default.max_extensions,
                   help="times the sweep may go a factor 2 past an edge that wins (default: %(default)s)")
    p.add_argument("--no-extend-up", dest="extend_up", action="store_false",
                   help="extend the sweep only down from an lr that failed, never up from one that trained "
                        "(the depth tables)")
    p.add_argument("--target-loss", type=float, default=6.0,
                   help="valid loss whose first crossing is reported (default: %(default)s)")
    p.add_argument("--min-gain", type=float, default=None, metavar="BITS",
                   help="a run must end at least BITS below the word-frequency plateau of --data (the "
                        "valid loss of predicting every token by its train frequency) or it fails like "
                        "a diverged one, as 'stalled', so the sweep goes down (the depth tables: 1)")
    p.add_argument("--save-every", type=int, default=0, metavar="UPDATES",
                   help="checkpoint every UPDATES updates (a multiple of --validate-every), so that a re-run "
                        "resumes an interrupted run instead of starting it again (default: 0, no checkpoints "
                        "before the end; a 50+50 run takes over an hour)")
    p.add_argument("--stop-stalled", action="store_true",
                   help="with --min-gain: stop a run from half its budget on once, at its pace of the last "
                        f"{PACE_VALIDATIONS} validations, it would still end 'stalled' (it fails as it would have "
                        "at the end, without test BLEU; the 50+50 table)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--plot", default=None, help="PNG of valid loss against updates (default: none)")
    p.add_argument("--quick", action="store_true", help="smoke test: 1+1 layers, 32-d, 10 updates, one run per method")
    args = p.parse_args(argv)
    if args.save_every < 0 or (args.save_every and args.save_every % args.validate_every):
        p.error(f"--save-every {args.save_every}: give 0 or a multiple of --validate-every "
                f"({args.validate_every}); fairseq validates at every save, so another interval "
                "would add validations")
    if args.stop_stalled and args.min_gain is None:
        p.error("--stop-stalled stops a run that cannot end --min-gain BITS below the word-frequency plateau: "
                "give --min-gain")
    RUNS = os.path.abspath(args.output)
    method_lrs = parse_method_lrs(p, args.method_lrs)
    check_data(args.data, args.lang)
    if args.quick:
        cfg = QUICK
        args.tag = args.tag or "quick"
    else:
        cfg = Config(layers=args.layers, dim=args.dim, ffn=args.ffn, heads=args.heads,
                     max_update=args.max_update, warmup=args.warmup, max_tokens=args.max_tokens,
                     dropout=default.dropout, validate_every=args.validate_every,
                     lrs=args.lrs, seeds=args.seeds, max_extensions=args.max_extensions,
                     method_lrs=method_lrs, extend_up=args.extend_up,
                     must_beat=None if args.min_gain is None else word_frequency_plateau(args.data, args.lang) - args.min_gain,
                     save_every=args.save_every, stop_stalled=args.stop_stalled)
        args.tag = args.tag or "core"
    if args.phase != "table":
        run_protocol(args, cfg)
    print_tables(args, cfg)


if __name__ == "__main__":
    main()
