"""Running OpenMMLab's own command line (``mim train/test``) from Python: what the
detection and video demos, and their end-to-end tests, share.

``run_mim`` starts ``python -m mim <command> <codebase> CONFIG --work-dir DIR ...`` from
the repository root, streams the progress lines of the runner's log, and raises with
the tail of the output if the command fails; ``last_checkpoint`` and
``read_test_metrics`` read what MMEngine leaves in the work folder.
"""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from typing import Callable, Dict, List, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Lines of the runner's log worth showing while a run is in progress.
PROGRESS_MARKS = ("Epoch(train)", "Epoch(val)", "Epoch(test)", "Saving checkpoint", "Traceback", "Error")


def _cfg_args(options: Dict[str, object]) -> List[str]:
    return ["--cfg-options"] + [f"{k}={v}" for k, v in options.items()] if options else []


def mim_command(codebase: str, command: str, config: str, work_dir: str,
                cfg_options: Optional[Dict[str, object]] = None, extra: Sequence[str] = ()) -> List[str]:
    """The command line ``python -m mim <command> <codebase> CONFIG --work-dir WORK_DIR [extra]
    --cfg-options ...`` (run it from :data:`ROOT`)."""
    return [sys.executable, "-m", "mim", command, codebase, config, "--work-dir", work_dir,
            *extra, *_cfg_args(cfg_options or {})]


def run_mim(codebase: str, command: str, config: str, work_dir: str,
            cfg_options: Optional[Dict[str, object]] = None, extra: Sequence[str] = (),
            verbose: bool = True, env: Optional[Dict[str, str]] = None,
            show: Callable[[str], str] = lambda line: line.rstrip()[-160:]) -> str:
    """:func:`mim_command` in a subprocess; returns its whole output. ``verbose`` prints
    ``show(line)`` for every progress line."""
    cmd = mim_command(codebase, command, config, work_dir, cfg_options, extra)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=dict(env or os.environ, PYTHONUNBUFFERED="1"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if verbose and any(m in line for m in PROGRESS_MARKS):
            print("    " + show(line), flush=True)
    proc.wait()
    out = "".join(lines)
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed with exit code {proc.returncode}:\n{out[-6000:]}")
    return out


def last_checkpoint(work_dir: str) -> str:
    """The path MMEngine's ``last_checkpoint`` file points at."""
    with open(os.path.join(work_dir, "last_checkpoint")) as f:
        return f.read().strip()


def read_test_metrics(work_dir: str) -> Dict[str, float]:
    """The metrics ``mim test`` dumped (``<work_dir>/<timestamp>/<timestamp>.json``), newest run."""
    files = sorted(glob.glob(os.path.join(work_dir, "*", "*.json")), key=os.path.getmtime)
    if not files:
        raise FileNotFoundError(f"no metrics file under {work_dir}")
    with open(files[-1]) as f:
        return json.load(f)
