"""MMEngine hooks that make a preempted MMDetection / MMAction2 run of a RescaleNet resume
as if nothing happened, and stop a diverging one loudly.

A network without normalization keeps state BatchNorm users never think about: the
AddBias means, calibrated on the first training iterations and then frozen. Three
behaviours of MMEngine 0.10.7 can leave such a model mis-calibrated or lose a run
(found by ``benchmarks/fault_harness.py``, see ``docs/reliability.md``):

* ``EpochBasedTrainLoop`` resumed from an iteration checkpoint
  (``checkpoint=dict(by_epoch=False, interval=K)``) replays the interrupted epoch
  from its first batch: the calibration goes on with batches it has already seen,
  and the run trains more iterations than ``max_epochs`` epochs;
* ``CheckpointHook`` deletes the oldest checkpoint (``max_keep_ckpts``) and the
  previous best one *before* it writes the new file, and writes files in place: a
  job killed while saving can be left with no loadable checkpoint at all;
* nothing stops on a non-finite loss: the model trains on with NaN weights, and
  later checkpoints (and a ``save_best`` one) hold them.

Config (the plugins ``projects.detection`` / ``projects.video`` register the hooks)::

    default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook', interval=1))
    custom_hooks = [dict(type='ExactResumeHook'), dict(type='DivergenceCheckHook'),
                    dict(type='DataFilesCheckHook')]
"""
from __future__ import annotations

import logging
import os
import os.path as osp
import random
from typing import Any, Callable, Dict, Iterable, List, Optional

import numpy as np
import torch
from mmengine.dist import get_world_size, is_main_process
from mmengine.fileio import LocalBackend, register_backend
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS
from mmengine.runner import EpochBasedTrainLoop

__all__ = [
    "AtomicLocalBackend",
    "SafeCheckpointHook",
    "ExactResumeHook",
    "DivergenceCheckHook",
    "DataFilesCheckHook",
    "RECOMMENDED_HOOKS",
    "rng_state",
    "set_rng_state",
]

# What a config adds to get all of the above (see the module docstring).
RECOMMENDED_HOOKS = [dict(type="ExactResumeHook"), dict(type="DivergenceCheckHook"),
                     dict(type="DataFilesCheckHook")]


# -- atomic checkpoint files ----------------------------------------------------------
def _atomic_write(data: bytes, filepath: str) -> None:
    """``filepath`` holds either its old content or all of ``data``, never a part."""
    os.makedirs(osp.dirname(osp.abspath(filepath)), exist_ok=True)
    tmp = f"{filepath}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, filepath)


@register_backend("local_atomic")
class AtomicLocalBackend(LocalBackend):
    """MMEngine's local file backend, writing through a temporary file and an atomic
    rename, so a process killed while saving never leaves a truncated checkpoint."""

    def put(self, obj: bytes, filepath) -> None:
        _atomic_write(obj, str(filepath))

    def put_text(self, obj: str, filepath, encoding: str = "utf-8") -> None:
        _atomic_write(obj.encode(encoding), str(filepath))


@HOOKS.register_module()
class SafeCheckpointHook(CheckpointHook):
    """``CheckpointHook`` that can be killed at any moment and still leaves a loadable
    checkpoint that ``--resume`` finds.

    Same arguments and file names as ``CheckpointHook``; what differs:

    * files are written atomically (:class:`AtomicLocalBackend`, unless ``backend_args``
      names another backend);
    * the new checkpoint (or best checkpoint) is complete *before* the oldest one
      (``max_keep_ckpts``) or the previous best one is deleted, so there is always
      one on disk; MMEngine deletes first;
    * ``work_dir/last_checkpoint`` is replaced atomically after the file it names is
      complete (MMEngine truncates and rewrites it in place).
    """

    def __init__(self, *args, **kwargs) -> None:
        if kwargs.get("backend_args") is None and kwargs.get("file_client_args") is None:
            kwargs["backend_args"] = dict(backend="local_atomic")
        super().__init__(*args, **kwargs)

    def _local(self) -> bool:
        return isinstance(self.file_backend, LocalBackend)

    def _save_checkpoint_with_step(self, runner, step, meta):
        if not self._local():
            return super()._save_checkpoint_with_step(runner, step, meta)
        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, ckpt_filename)
        runner.message_hub.update_info("last_ckpt", self.last_ckpt)
        stale = None
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                stale = self.keep_ckpt_ids.popleft()
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info("keep_ckpt_ids", list(self.keep_ckpt_ids))
        runner.save_checkpoint(
            self.out_dir, ckpt_filename, self.file_client_args, save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler, meta=meta, by_epoch=self.by_epoch,
            backend_args=self.backend_args, **self.args)
        if not is_main_process():
            return
        _atomic_write(self.last_ckpt.encode(), osp.join(runner.work_dir, "last_checkpoint"))
        if stale is not None and stale != step:
            path = self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(stale))
            if self.file_backend.isfile(path):
                self.file_backend.remove(path)

    def _save_best_checkpoint(self, runner, metrics) -> None:
        if not self._local() or not self.save_best:
            return super()._save_best_checkpoint(runner, metrics)
        # Hide the previous best checkpoint(s) from the parent, which would delete them
        # before writing the new one; delete them once the new one is on disk.
        single = len(self.key_indicators) == 1
        previous = {None: self.best_ckpt_path} if single else dict(self.best_ckpt_path_dict)
        if single:
            self.best_ckpt_path = None
        else:
            self.best_ckpt_path_dict = {k: None for k in previous}
        try:
            super()._save_best_checkpoint(runner, metrics)
        finally:
            current = {None: self.best_ckpt_path} if single else self.best_ckpt_path_dict
            for key, old in previous.items():
                new = current.get(key)
                if new is None:  # not improved: keep the old one
                    current[key] = old
                elif old and old != new and is_main_process() and self.file_backend.isfile(old):
                    self.file_backend.remove(old)
                    runner.logger.info(f"The previous best checkpoint {old} is removed")
            if single:
                self.best_ckpt_path = current[None]
                if self.best_ckpt_path:
                    runner.message_hub.update_info("best_ckpt", self.best_ckpt_path)
            else:
                self.best_ckpt_path_dict = current


# -- exact resume ---------------------------------------------------------------------
def rng_state() -> Dict[str, Any]:
    """The global random states a training process draws from (torch CPU and CUDA,
    numpy, Python), in types ``torch.load(weights_only=True)`` accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": random.getstate(),
    }


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


class _ResumedEpoch:
    """The training dataloader for the one epoch a run resumes in the middle of: it
    draws and drops the ``skip`` batches trained before the checkpoint (the sampler
    yields the epoch's order again), calls ``on_start()``, then yields the rest.
    Everything else (``len``, ``sampler``, ``dataset``) is the dataloader's."""

    def __init__(self, loader, skip: int, on_start: Callable[[], None]) -> None:
        self.loader, self.skip, self.on_start = loader, skip, on_start

    def __iter__(self):
        batches = iter(self.loader)
        for _ in range(self.skip):
            next(batches)
        self.on_start()
        yield from batches

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str):
        return getattr(self.loader, name)


@HOOKS.register_module()
class ExactResumeHook(Hook):
    """Resume a killed run where it stopped: same batches, same random draws.

    * saves the global random states in every checkpoint (``checkpoint['rng_state']``)
      and restores them on ``--resume`` (single-process runs: with several processes
      only rank 0's state would be saved, so they are left seeded);
    * resuming an ``EpochBasedTrainLoop`` from an iteration checkpoint, skips the
      batches of the interrupted epoch trained before it (``IterBasedTrainLoop`` does
      this itself), instead of MMEngine's replay of the whole epoch, which feeds the
      AddBias calibration batches it has already seen and trains extra iterations;
    * makes the validation loop inside training leave the random states as it found
      them, so a resumed run draws what the uninterrupted one drew.

    With ``num_workers=0`` and a deterministic model the resumed run is bitwise the
    uninterrupted one; data-loading worker processes keep random states of their own,
    which are not restored (the data augmentation then differs after the resume).
    """

    priority = "HIGH"

    def __init__(self) -> None:
        self._resumed: Optional[Dict[str, Any]] = None  # the resumed checkpoint's meta and rng_state
        self._val_rng: Optional[Dict[str, Any]] = None
        self._wrapped = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint["rng_state"] = rng_state()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        self._resumed = dict(meta=checkpoint.get("meta", {}), rng=checkpoint.get("rng_state"))

    def before_train_epoch(self, runner) -> None:
        resumed, self._resumed = self._resumed, None
        # ``load_from`` (fine-tuning) also loads a checkpoint, but starts at iteration 0
        if resumed is None or runner.iter == 0 or runner.iter != resumed["meta"].get("iter"):
            return
        restore = self._restorer(runner, resumed["rng"])
        loop = runner.train_loop
        if not isinstance(loop, EpochBasedTrainLoop):
            restore()
            return
        per_epoch = len(loop.dataloader)
        done = runner.iter - runner.epoch * per_epoch
        if not 0 <= done < per_epoch:
            raise RuntimeError(
                f"ExactResumeHook: the checkpoint was saved at iteration {runner.iter} of epoch "
                f"{runner.epoch + 1}, which does not fit {per_epoch} iterations per epoch: the "
                "training set or its batch size changed since; resume with the same data and batch size")
        if done == 0:
            restore()
            return
        print_log(f"ExactResumeHook: resuming in epoch {runner.epoch + 1} after its iteration {done}: "
                  f"skipping the {done} batches trained before the checkpoint", logger="current")
        self._wrapped = loop.dataloader
        loop.dataloader = _ResumedEpoch(loop.dataloader, done, restore)

    def after_train_epoch(self, runner) -> None:
        if self._wrapped is not None:
            runner.train_loop.dataloader, self._wrapped = self._wrapped, None

    @staticmethod
    def _restorer(runner, state: Optional[Dict[str, Any]]) -> Callable[[], None]:
        if state is None:
            print_log("ExactResumeHook: the checkpoint holds no random states (saved without this hook); "
                      "the resumed run draws other random numbers", logger="current", level=logging.WARNING)
            return lambda: None
        if get_world_size() > 1:
            print_log("ExactResumeHook: random states are restored for single-process runs only",
                      logger="current", level=logging.WARNING)
            return lambda: None
        return lambda: set_rng_state(state)

    def before_val_epoch(self, runner) -> None:
        self._val_rng = rng_state()

    def after_val_epoch(self, runner, metrics=None) -> None:
        if self._val_rng is not None:
            set_rng_state(self._val_rng)
            self._val_rng = None


# -- divergence -----------------------------------------------------------------------
def _non_finite(values: Dict[str, Any]) -> Dict[str, float]:
    bad = {}
    for name, value in values.items():
        if isinstance(value, torch.Tensor) and value.numel() and value.is_floating_point():
            if not torch.isfinite(value.detach()).all():
                bad[name] = float(value.detach().float().flatten()[0]) if value.numel() == 1 else float("nan")
        elif isinstance(value, float) and not np.isfinite(value):
            bad[name] = value
    return bad


@HOOKS.register_module()
class DivergenceCheckHook(Hook):
    """Stop training at the first non-finite loss, naming the iteration and the loss,
    before any checkpoint of the diverged model is written; and refuse to write a
    checkpoint whose weights are not finite (``CheckpointHook``'s last, interval and
    ``save_best`` checkpoints alike).

    Without normalization nothing rescales the activations after an over-large step,
    so a too high learning rate blows the loss up within a few iterations; MMEngine
    would go on training a NaN model and checkpoint it.
    """

    # before CheckpointHook (VERY_LOW) and LoggerHook (BELOW_NORMAL) see the iteration
    priority = "VERY_HIGH"

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        bad = _non_finite(outputs or {})
        if bad:
            last = runner.message_hub.get_info("last_ckpt")
            raise FloatingPointError(
                f"training diverged at iteration {runner.iter + 1} (epoch {runner.epoch + 1}): "
                + ", ".join(f"{k} = {v}" for k, v in bad.items())
                + ". Stopped before saving anything of this iteration; the last checkpoint is "
                + (f"{last}" if last else "none (nothing was saved yet)")
                + ". Lower optim_wrapper.optimizer.lr, lengthen the warm-up or clip gradients "
                "(optim_wrapper.clip_grad), then resume or restart")

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get("state_dict", {})
        bad = [k for k, v in state.items()
               if isinstance(v, torch.Tensor) and v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise FloatingPointError(
                f"refusing to save a checkpoint at iteration {runner.iter}: {len(bad)} weight tensor(s) are "
                f"not finite (e.g. {bad[0]}): the model diverged. Lower the learning rate and resume from "
                f"the last checkpoint ({runner.message_hub.get_info('last_ckpt')})")


# -- data files -----------------------------------------------------------------------
_FILE_KEYS = ("img_path", "filename", "frame_dir")


def _base_datasets(dataset) -> Iterable:
    """The datasets inside MMEngine's wrappers (Concat, Repeat, ClassBalanced)."""
    inner = getattr(dataset, "datasets", None)
    if inner is not None:
        for d in inner:
            yield from _base_datasets(d)
    elif hasattr(dataset, "dataset") and not hasattr(dataset, "get_data_info"):
        yield from _base_datasets(dataset.dataset)
    else:
        yield dataset


def _data_infos(dataset) -> Iterable[dict]:
    # MMEngine's BaseDataset serializes its data_list (serialize_data=True, the default)
    # and empties it: read the entries back through get_data_info
    if hasattr(dataset, "get_data_info"):
        return (dataset.get_data_info(i) for i in range(len(dataset)))
    return iter(getattr(dataset, "data_list", []))


def missing_files(dataset) -> List[str]:
    """The local images / videos / frame folders a dataset lists that do not exist."""
    missing = []
    for d in _base_datasets(dataset):
        for info in _data_infos(d):
            for key in _FILE_KEYS:
                path = info.get(key) if isinstance(info, dict) else None
                if isinstance(path, str) and "://" not in path and not osp.exists(path):
                    missing.append(path)
    return missing


@HOOKS.register_module()
class DataFilesCheckHook(Hook):
    """Before training, validation or testing starts, check that every image, video or
    frame folder the annotation files list exists, and stop with one error naming the
    annotation file and the first missing files; instead of a ``FileNotFoundError`` from
    deep inside the data pipeline at the first batch that needs one (or, with
    ``ignore_empty``, silently fewer samples)."""

    priority = "VERY_HIGH"

    def __init__(self) -> None:
        self._checked = set()

    def _check(self, loader, name: str) -> None:
        if loader is None or name in self._checked:
            return
        self._checked.add(name)
        dataset = loader.dataset
        missing = missing_files(dataset)
        if missing:
            total = sum(len(d) for d in _base_datasets(dataset))
            ann = [str(a) for a in (getattr(d, "ann_file", None) for d in _base_datasets(dataset)) if a]
            listed = f"listed in {', '.join(ann)} " if ann else ""
            raise FileNotFoundError(
                f"{name}: {len(missing)} of the {total} samples {listed}point at "
                f"files that do not exist, e.g. {missing[:3]}: the annotation file does not match the "
                f"images under data_root / data_prefix; fix {name}.dataset.data_root / data_prefix or the "
                "annotation file")

    def before_train(self, runner) -> None:
        self._check(runner.train_dataloader, "train_dataloader")

    def before_val(self, runner) -> None:
        self._check(runner.val_dataloader, "val_dataloader")

    def before_test(self, runner) -> None:
        self._check(runner.test_dataloader, "test_dataloader")
