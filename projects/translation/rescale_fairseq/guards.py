"""Clear errors around a ``fairseq-train`` run of a RescaleNet Transformer: a checkpoint
to resume from that a kill left truncated, or that belongs to another language pair, and
a divergence that fairseq reports without its update.

What fairseq 0.12 does, and what these add (``docs/reliability.md``):

* ``checkpoint_utils.save_checkpoint`` writes the first checkpoint of a save atomically
  (``.tmp`` + rename) but *copies* it in place to ``checkpoint_last.pt`` (and
  ``checkpoint_best.pt``): a job killed during that copy leaves a truncated
  ``checkpoint_last.pt``, which the next ``fairseq-train`` (resuming from it by default)
  fails to read with ``PytorchStreamReader failed reading zip archive``.
  :func:`check_restore_file` refuses it first, naming the newest complete checkpoint to
  pass as ``--restore-file``.
* fairseq composes the training batches once per process, with ``numpy_seed(seed +
  epoch)`` of the epoch the process starts at: a run resumed in epoch 2 or later trains
  on other batches than the uninterrupted run, unless both pass
  ``--update-epoch-batch-itr True`` (batches rebuilt every epoch); :func:`check_restore_file`
  warns when such a resume happens without it.
* Resuming with the data directory of another language pair (or other dictionaries)
  fails deep in ``load_state_dict`` with fairseq's "please ensure that the architectures
  match"; :func:`check_restore_file` names the two pairs and dictionary sizes first.
* fairseq checks the gradients, not the outputs: a model whose outputs are already
  NaN is validated (``loss nan``) and saved as ``checkpoint_last.pt`` and
  ``checkpoint_{epoch}_{updates}.pt``; :func:`check_finite_output` stops training or
  validation at the first non-finite output instead, before anything of it is saved.
* On non-finite gradients fairseq stops with ``FloatingPointError: gradients are
  Nan/Inf`` after saving the state at the failure to ``crash.pt``; it writes no
  ``checkpoint_best.pt`` / ``checkpoint_last.pt`` of it. Its ``NanDetector`` then reruns
  the step and, under torch 2.11, fails itself with a ``StopIteration`` (its
  non-full backward hooks cannot handle the encoder's dict output), which becomes the
  last line. Neither names the update nor the loss: :func:`report_divergence` adds one
  line that does.
* ``fairseq-generate`` / ``-interactive`` / ``-validate --path`` of a truncated or
  corrupt file end with torch's ``PytorchStreamReader failed reading zip archive``,
  which names no file: :func:`name_unreadable_checkpoints` makes fairseq's checkpoint
  reader raise one error naming it.
"""
from __future__ import annotations

import functools
import glob
import logging
import os
import sys
import zipfile
from typing import Callable, Dict, Optional

import torch

from .safe_globals import register_fairseq_safe_globals

__all__ = ["restore_path", "newest_complete_checkpoint", "check_restore_file", "report_divergence",
           "install_divergence_report", "check_finite_output", "check_vocabulary_sizes", "training_state",
           "name_unreadable_checkpoints"]

logger = logging.getLogger(__name__)

# What the divergence report reads: the updates done before the current one (what
# fairseq's task.train_step passes to the model's set_num_updates) and the save directory.
training_state: Dict[str, object] = {}


def _training() -> bool:
    # build_model also runs when fairseq-generate / -interactive / -validate load a model;
    # the resume checks and the divergence report are for fairseq-train (and hydra_train)
    return "fairseq_cli.train" in sys.modules


def restore_path(args) -> Optional[str]:
    """The checkpoint ``fairseq-train`` resumes from (``checkpoint_utils.load_checkpoint``'s rule)."""
    restore = getattr(args, "restore_file", "checkpoint_last.pt")
    save_dir = getattr(args, "save_dir", "checkpoints")
    if restore == "checkpoint_last.pt":
        return os.path.join(save_dir, f"checkpoint_last{getattr(args, 'checkpoint_suffix', '') or ''}.pt")
    return restore


def _complete(path: str) -> bool:
    # a torch.save file is a zip archive, whose directory is written last: a truncated
    # file has none (a cheap check: only the end of the file is read)
    return zipfile.is_zipfile(path)


def _num_updates(path: str) -> int:
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    history = state.get("optimizer_history") or [{}]
    return int(history[-1].get("num_updates", -1))


def newest_complete_checkpoint(save_dir: str, exclude: str = "") -> Optional[str]:
    """The readable checkpoint of ``save_dir`` with the most updates (``crash.pt`` aside;
    of equals, an epoch or interval checkpoint rather than ``checkpoint_best.pt``)."""
    found = []
    for path in sorted(glob.glob(os.path.join(save_dir, "checkpoint*.pt"))):
        if os.path.abspath(path) == os.path.abspath(exclude) or not _complete(path):
            continue
        try:
            found.append((_num_updates(path), "best" not in os.path.basename(path), path))
        except Exception:  # unreadable for another reason: not a candidate
            continue
    return max(found)[2] if found else None


def check_restore_file(args, task) -> None:
    """Refuse, before fairseq tries, a resume checkpoint that is truncated or was trained
    on another language pair or with other dictionaries (``fairseq-train`` only)."""
    if not _training():
        return
    path = restore_path(args)
    if not path or not os.path.isfile(path):
        return
    if not _complete(path):
        newest = newest_complete_checkpoint(os.path.dirname(path) or ".", exclude=path)
        advice = (f"resume from the newest complete checkpoint with --restore-file {newest}" if newest else
                  "no complete checkpoint is left in that folder: delete it (or pass another --save-dir) "
                  "to start again")
        raise ValueError(
            f"{path} is truncated or corrupt (the job was probably killed while fairseq copied it: fairseq writes "
            f"checkpoint_last.pt in place, not atomically): {advice}")
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    cfg = (state.get("cfg") or {}).get("task") or {}
    if not cfg and state.get("args") is not None:
        cfg = vars(state["args"])
    pair = (cfg.get("source_lang"), cfg.get("target_lang"))
    here = (getattr(task.cfg, "source_lang", None), getattr(task.cfg, "target_lang", None))
    sizes = {side: tuple(state["model"][f"{side}.embed_tokens.weight"].shape)[0]
             for side in ("encoder", "decoder") if f"{side}.embed_tokens.weight" in state.get("model", {})}
    now = {"encoder": len(task.source_dictionary), "decoder": len(task.target_dictionary)}
    if not getattr(args, "update_epoch_batch_itr", False) and int(
            (state.get("extra_state") or {}).get("train_iterator", {}).get("epoch", 1)) > 1:
        logger.warning(
            f"rescale_transformer: resuming from {path} in an epoch after the first without "
            "--update-epoch-batch-itr: fairseq composes the training batches once, with the seed of the epoch a "
            "process starts at, so this run trains on other batches than an uninterrupted one (and an AddBias "
            "calibration still under way averages other batches). Pass --update-epoch-batch-itr True, in the "
            "first run too, for a resume that sees the same batches (docs/reliability.md)")
    if (None not in pair and None not in here and pair != here) or any(sizes[s] != now[s] for s in sizes):
        def langs(p):  # (fairseq infers the pair from the file names when --source-lang is not given)
            return f" {p[0]}->{p[1]}" if None not in p else ""
        raise ValueError(
            f"{path} was trained{langs(pair)} with vocabularies of {sizes.get('encoder')} / {sizes.get('decoder')} "
            f"entries; this run reads {getattr(task.cfg, 'data', '?')}{langs(here)} with {now['encoder']} / "
            f"{now['decoder']}: the data directory is of another language pair or was binarized with other "
            "dictionaries. Use another --save-dir, or the data directory the checkpoint was trained on")


def _last_loss() -> str:
    from fairseq.logging import metrics

    for name in ("train_inner", "train"):
        value = metrics.get_smoothed_values(name).get("loss") if name in metrics._aggregators else None
        if value is not None:
            return f"{float(value):.4g} ({'average since the last log' if name == 'train_inner' else 'epoch average'})"
    return "not logged yet"


_OWN = "rescale_transformer diverged"


def _floating_point_error(value: BaseException) -> Optional[BaseException]:
    """``value`` or the exception it was raised while handling, if a FloatingPointError."""
    seen = 0
    while value is not None and seen < 8:
        if isinstance(value, FloatingPointError):
            return value
        value, seen = value.__context__, seen + 1
    return None


def report_divergence(previous: Callable = sys.excepthook) -> Callable:
    """A ``sys.excepthook`` that, after the usual traceback, prints for a
    ``FloatingPointError`` (fairseq's "gradients are Nan/Inf", "Minimum loss scale
    reached"; also when fairseq's NanDetector fails while handling it) one line naming
    the update, the loss, and what was (not) saved."""

    def hook(kind, value, tb):
        previous(kind, value, tb)
        error = _floating_point_error(value)
        if error is None or "num_updates" not in training_state or str(error).startswith(_OWN):
            return
        update = int(training_state["num_updates"]) + 1
        print(f"{_OWN} at update {update}: {error}; last training loss {_last_loss()}. No checkpoint of this "
              f"update was written ({_saved_note()}). "
              "Lower --lr or lengthen --warmup-updates, then resume or start again", file=sys.stderr, flush=True)

    return hook


def check_finite_output(model, lprobs) -> None:
    """In ``fairseq-train`` (training and validation): stop at the first non-finite
    output of the model, naming the update; fairseq would compute a NaN loss, validate
    and save the model as ``checkpoint_last.pt``, and stop only when a gradient is NaN."""
    if not _training() or torch.isfinite(lprobs).all():
        return
    # (fairseq's task.train_step calls set_num_updates(updates done) before each update)
    update = int(training_state.get("num_updates", 0)) + 1
    stage = f"training update {update}" if model.training else f"validation after update {update}"
    raise FloatingPointError(
        f"{_OWN} at {stage}: the decoder output is not finite, so the loss is NaN or infinite (last training "
        f"loss {_last_loss()}); stopped before a checkpoint of it was saved ({_saved_note()}). "
        "Lower --lr or lengthen --warmup-updates, "
        "then resume or start again")


def _saved_note() -> str:
    """What a resume would read, and what fairseq's ``crash.pt`` is (fairseq dumps the
    state to it when a training step raises, after this message is composed)."""
    save_dir = str(training_state.get("save_dir", "")) or "."
    kept = [n for n in ("checkpoint_best.pt", "checkpoint_last.pt") if os.path.isfile(os.path.join(save_dir, n))]
    held = (f"{' and '.join(kept)} in {save_dir} {'hold' if len(kept) > 1 else 'holds'} an earlier save" if kept
            else f"no checkpoint had been saved in {save_dir} yet")
    crash = os.path.join(save_dir, "crash.pt")
    return (held + f"; fairseq also dumps the failing state to {crash}, for debugging only: its weights and "
            "AddBias means may be non-finite, never resume from it")


def install_divergence_report(args) -> None:
    """Install :func:`report_divergence` once, for ``fairseq-train``."""
    if _training() and "installed" not in training_state:
        training_state.update(installed=True, save_dir=getattr(args, "save_dir", ""))
        sys.excepthook = report_divergence(sys.excepthook)


def check_vocabulary_sizes(model, state_dict) -> None:
    """Before ``load_state_dict``: one clear error when the checkpoint's vocabularies do
    not match the dictionaries of the data directory (fairseq-generate / -interactive /
    -validate with the data of another language pair)."""
    for side, dictionary in (("encoder", model.encoder.dictionary), ("decoder", model.decoder.dictionary)):
        key = f"{side}.embed_tokens.weight"
        if key in state_dict and state_dict[key].shape[0] != len(dictionary):
            raise ValueError(
                f"the checkpoint's {side} vocabulary has {state_dict[key].shape[0]} entries, the dictionary of "
                f"the data directory {len(dictionary)}: the data directory is of another language pair or was "
                "binarized with other dictionaries; pass the data directory the model was trained on (or "
                "binarize with fairseq-preprocess --srcdict/--tgtdict of the model's dictionaries)")


def name_unreadable_checkpoints() -> None:
    """Wrap ``fairseq.checkpoint_utils.load_checkpoint_to_cpu`` (every fairseq command
    reads checkpoints through it, looked up at call time) so that the plugin's allowlist
    is in place for every load, and a truncated or corrupt file raises one error naming
    it and what to do; any other error passes unchanged.
    Idempotent; the plugin calls it when fairseq imports it (``--user-dir``)."""
    from fairseq import checkpoint_utils

    read = checkpoint_utils.load_checkpoint_to_cpu
    if getattr(read, "names_unreadable_files", False):
        return

    @functools.wraps(read)
    def load_checkpoint_to_cpu(path, *args, **kwargs):
        register_fairseq_safe_globals()  # again: another library's safe_globals block may have removed them
        try:
            return read(path, *args, **kwargs)
        except (RuntimeError, EOFError, OSError) as e:
            if not os.path.isfile(path) or _complete(path):
                raise  # a missing file (fairseq's own message names it) or another problem
            newest = newest_complete_checkpoint(os.path.dirname(path) or ".", exclude=path)
            raise ValueError(
                f"{path} is truncated or corrupt ({type(e).__name__}: {str(e).splitlines()[0][:120]}): a job "
                "killed while writing or copying it, or an incomplete transfer; "
                + (f"the newest complete checkpoint next to it is {newest}" if newest else
                   "no complete checkpoint is next to it: copy the file again or train it again")) from e

    load_checkpoint_to_cpu.names_unreadable_files = True
    checkpoint_utils.load_checkpoint_to_cpu = load_checkpoint_to_cpu
