"""A generated parallel corpus and the fairseq command lines around it.

The task: each source sentence is a random sequence of words from a small source
vocabulary; its translation is the same sentence *reversed*, every word replaced
through a fixed one-to-one lexicon. A model has to learn the lexicon and to
attend to the mirrored position, so BLEU goes from about 0 (untrained) to 100.
Shared by ``tests/test_translation_e2e.py`` and ``benchmarks/bench_translation.py``.
"""
from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

__all__ = [
    "PLUGIN_DIR",
    "make_lexicon",
    "make_pair",
    "write_corpus",
    "fairseq_cli",
    "run",
    "cli_env",
    "preprocess",
    "train",
    "generate",
    "parse_bleu",
    "TINY_MODEL_ARGS",
]

PLUGIN_DIR = str(Path(__file__).resolve().parent / "rescale_fairseq")
REPO_ROOT = str(Path(__file__).resolve().parents[2])

# a model small enough to train to a clear BLEU on 2 CPU cores in about a minute
TINY_MODEL_ARGS = [
    "--encoder-layers", "2", "--decoder-layers", "2",
    "--encoder-embed-dim", "64", "--decoder-embed-dim", "64",
    "--encoder-ffn-embed-dim", "128", "--decoder-ffn-embed-dim", "128",
    "--encoder-attention-heads", "4", "--decoder-attention-heads", "4",
]


def load_plugin():
    """The plugin module, imported the one way fairseq does (``--user-dir``: the top-level
    module ``rescale_fairseq``), so its model is registered once in this process."""
    import argparse
    import importlib

    from fairseq import utils

    utils.import_user_module(argparse.Namespace(user_dir=PLUGIN_DIR))
    return importlib.import_module("rescale_fairseq")


def make_lexicon(vocab_size: int, seed: int = 0) -> Dict[str, str]:
    """A fixed random one-to-one map from source words ``s0..`` to target words ``t0..``."""
    targets = [f"t{i}" for i in range(vocab_size)]
    random.Random(seed).shuffle(targets)
    return {f"s{i}": t for i, t in enumerate(targets)}


def make_pair(rng: random.Random, lexicon: Dict[str, str], min_len: int, max_len: int) -> Tuple[str, str]:
    src = [rng.choice(sorted(lexicon)) for _ in range(rng.randint(min_len, max_len))]
    return " ".join(src), " ".join(lexicon[w] for w in reversed(src))


def write_corpus(
    out_dir: str,
    n_train: int = 4000,
    n_valid: int = 200,
    n_test: int = 200,
    vocab_size: int = 24,
    min_len: int = 3,
    max_len: int = 8,
    seed: int = 0,
) -> str:
    """Write ``{train,valid,test}.{src,tgt}`` to ``out_dir``; returns ``out_dir``."""
    if vocab_size < 1 or not 1 <= min_len <= max_len:
        raise ValueError("need vocab_size >= 1 and 1 <= min_len <= max_len")
    lexicon = make_lexicon(vocab_size, seed)
    rng = random.Random(seed + 1)
    os.makedirs(out_dir, exist_ok=True)
    for split, n in (("train", n_train), ("valid", n_valid), ("test", n_test)):
        pairs = [make_pair(rng, lexicon, min_len, max_len) for _ in range(n)]
        for side, idx in (("src", 0), ("tgt", 1)):
            with open(os.path.join(out_dir, f"{split}.{side}"), "w") as f:
                f.write("".join(p[idx] + "\n" for p in pairs))
    return out_dir


def fairseq_cli(name: str) -> List[str]:
    """The command for a fairseq console script (``fairseq-train`` ...) of the running
    interpreter's environment."""
    script = Path(sys.executable).parent / name
    if script.exists():
        return [str(script)]
    module = {"fairseq-preprocess": "preprocess", "fairseq-train": "train",
              "fairseq-generate": "generate", "fairseq-interactive": "interactive"}[name]
    return [sys.executable, "-c", f"from fairseq_cli.{module} import cli_main; cli_main()"]


def run(cmd: Sequence[str], env: Optional[Dict[str, str]] = None, timeout: float = 900, log: Optional[str] = None,
        append: bool = False, stop: Optional[Callable[[str], bool]] = None, poll_seconds: float = 10.0) -> str:
    """Run a fairseq command and return its output (stdout and stderr). With ``log``, the
    output goes to that file as it is written (follow a long run with ``tail -f``); with
    ``append``, after what the file holds (a resumed run), and the whole file is returned.
    With ``stop`` (and ``log``), every ``poll_seconds`` the complete lines of the log are
    passed to it, and the command is terminated, without an error, once it returns True.
    A failure raises with the command and the end of its output."""
    if stop is not None and log is None:
        raise ValueError("run(stop=...) reads the command's log: give log=PATH as well")
    if log is None:
        proc = subprocess.run(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env=env, timeout=timeout)
        output, stopped = proc.stdout, False
    else:
        with open(log, "a" if append else "w") as f:
            proc = subprocess.Popen(list(cmd), stdout=f, stderr=subprocess.STDOUT, env=env)
            stopped = _wait(proc, cmd, timeout, log, stop, poll_seconds)
        with open(log) as f:
            output = f.read()
    if proc.returncode != 0 and not stopped:
        raise RuntimeError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{output[-6000:]}")
    return output


def _wait(proc: subprocess.Popen, cmd: Sequence[str], timeout: float, log: str,
          stop: Optional[Callable[[str], bool]], poll_seconds: float) -> bool:
    """Wait for ``proc``; True when ``stop`` ended it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            proc.wait(timeout=min(poll_seconds if stop else timeout, max(deadline - time.monotonic(), 0.01)))
            return False
        except subprocess.TimeoutExpired:
            if time.monotonic() >= deadline:
                proc.kill()
                proc.wait()
                raise subprocess.TimeoutExpired(list(cmd), timeout)
            with open(log) as f:
                text = f.read()
            if stop is not None and stop(text[:text.rfind("\n") + 1]):  # a line being written is left out
                proc.terminate()
                proc.wait()
                return True


def cli_env(threads: int) -> Dict[str, str]:
    """The environment of a fairseq command: ``threads`` OpenMP/MKL threads, the repository on the path."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    # the plugin imports ``rescalenet``: found when the repository is pip-installed
    # (``make setup``), and from a bare checkout through PYTHONPATH
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO_ROOT, env.get("PYTHONPATH")) if p)
    return env



def preprocess(text_dir: str, data_bin: str, threads: int = 1) -> str:
    """``fairseq-preprocess`` of the corpus in ``text_dir`` into ``data_bin``."""
    run(fairseq_cli("fairseq-preprocess") + [
        "--source-lang", "src", "--target-lang", "tgt",
        "--trainpref", f"{text_dir}/train", "--validpref", f"{text_dir}/valid",
        "--testpref", f"{text_dir}/test", "--destdir", data_bin,
        "--workers", "1",
    ], env=cli_env(threads))
    return data_bin


def train(
    data_bin: str,
    save_dir: str,
    arch: str,
    max_update: int,
    extra: Sequence[str] = (),
    threads: int = 1,
    seed: int = 1,
) -> str:
    """``fairseq-train --user-dir <plugin> --cpu`` with the tiny model and an
    inverse-sqrt Adam recipe; returns the log."""
    return run(fairseq_cli("fairseq-train") + [
        data_bin, "--user-dir", PLUGIN_DIR, "--cpu", "--arch", arch, *TINY_MODEL_ARGS,
        "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--clip-norm", "0.0",
        "--lr", "3e-3", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "100",
        "--warmup-init-lr", "1e-7", "--dropout", "0.0",
        "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
        "--max-tokens", "1500", "--max-update", str(max_update), "--seed", str(seed),
        # validate and save once, at the end (fairseq always does when training stops)
        "--save-dir", save_dir, "--no-epoch-checkpoints", "--save-interval", "100000",
        "--validate-interval", "100000", "--num-workers", "0", "--log-format", "simple",
        "--log-interval", "50", "--no-progress-bar", *extra,
    ], env=cli_env(threads))


def generate(data_bin: str, checkpoint: str, extra: Sequence[str] = (), threads: int = 1) -> str:
    """``fairseq-generate --user-dir <plugin>`` on the test split; returns the output."""
    return run(fairseq_cli("fairseq-generate") + [
        data_bin, "--user-dir", PLUGIN_DIR, "--cpu", "--path", checkpoint,
        "--gen-subset", "test", "--beam", "4", "--batch-size", "128", *extra,
    ], env=cli_env(threads))


def parse_bleu(generate_output: str) -> float:
    """The corpus BLEU fairseq-generate prints (``... BLEU = 87.12 ...``)."""
    m = re.search(r"BLEU4? = ([0-9.]+)", generate_output)
    if m is None:
        raise ValueError("no BLEU score in the fairseq-generate output")
    return float(m.group(1))
