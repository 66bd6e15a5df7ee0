"""Fault injection for ``benchmarks/fault_harness.py``: SIGKILL a training process at a
chosen moment, whatever framework runs it.

Python imports ``sitecustomize`` at start-up from the first ``sys.path`` entry that has
one, so putting this folder on ``PYTHONPATH`` arms every Python process of a command
(``mim train`` and the ``tools/train.py`` it starts, ``fairseq-train``,
``python -m rescalenet.train``). It does nothing unless ``FAULT_INJECT`` is set:

``FAULT_INJECT=after_step:N``
    SIGKILL right after the N-th optimizer step of the process (a global
    ``torch.optim`` step hook: the step is applied, its checkpoint not yet written).
``FAULT_INJECT=in_write:N:PATTERN``
    SIGKILL in the middle of writing the first file whose name matches ``PATTERN``
    (``fnmatch``, e.g. ``*.pth*``) opened for writing after the N-th optimizer step:
    when the writer closes it, the file is cut to half its size and the process is
    killed before the writer's next line (a rename, a copy, a pointer file) runs.
    Covers ``open(path, 'wb')`` (any Python writer) and ``shutil.copyfile`` (fairseq
    copies ``checkpoint_last.pt`` from the first file it saved).

``FAULT_INJECT=nan_after_step:N``
    Right after the N-th optimizer step, set every parameter of the optimizer to NaN:
    what a far too large step does to a model, at a moment after checkpoints have been
    written (the harness's late divergence: the run must stop at the next step and leave
    the earlier checkpoints as they were).

``FAULT_INJECT_LOG`` names a file that gets one line describing the kill just before
it happens, so the harness can tell an injected kill from a crash.
"""
import builtins
import fnmatch
import io
import os
import shutil
import signal

_SPEC = os.environ.get("FAULT_INJECT", "")
_LOG = os.environ.get("FAULT_INJECT_LOG", "")
_steps = 0


def _kill(message: str) -> None:
    if _LOG:
        with open(_LOG, "a") as f:
            f.write(message + "\n")
            f.flush()
            os.fsync(f.fileno())
    os.kill(os.getpid(), signal.SIGKILL)


def _on_step(optimizer, args, kwargs) -> None:
    global _steps
    _steps += 1
    if _mode == "after_step" and _steps == _at:
        _kill(f"killed after optimizer step {_steps}")
    if _mode == "nan_after_step" and _steps == _at:
        import torch

        with torch.no_grad():
            for group in optimizer.param_groups:
                for p in group["params"]:
                    p.fill_(float("nan"))
        if _LOG:
            with _real_open(_LOG, "a") as f:
                f.write(f"parameters set to NaN after optimizer step {_steps}\n")


class _CutOnClose(io.BufferedWriter):
    """A binary file that, on close, keeps only the first half of what was written and
    kills the process."""

    def close(self) -> None:
        if self.closed:
            return
        self.flush()
        size = self.tell()
        self.truncate(size // 2)
        self.flush()
        os.fsync(self.fileno())
        _kill(f"killed while writing {self.raw.name} ({size // 2} of {size} bytes written) "
              f"after optimizer step {_steps}")


def _armed(path) -> bool:
    return (_mode == "in_write" and _steps >= _at and isinstance(path, (str, os.PathLike))
            and fnmatch.fnmatch(os.path.basename(os.fspath(path)), _pattern))


_real_open = builtins.open
_real_copyfile = shutil.copyfile


def _open(file, mode="r", *args, **kwargs):
    if "w" in mode and "b" in mode and "+" not in mode and _armed(file):
        return _CutOnClose(io.FileIO(file, "wb"))
    return _real_open(file, mode, *args, **kwargs)


def _copyfile(src, dst, *args, **kwargs):
    if _armed(dst):
        with _real_open(src, "rb") as f:
            data = f.read()
        with _open(dst, "wb") as f:
            f.write(data)
        return dst
    return _real_copyfile(src, dst, *args, **kwargs)


_mode, _at, _pattern = "", 0, ""
if _SPEC:
    parts = _SPEC.split(":", 2)
    _mode, _at = parts[0], int(parts[1])
    _pattern = parts[2] if len(parts) > 2 else "*"
    if _mode not in ("after_step", "in_write", "nan_after_step"):
        raise ValueError(f"FAULT_INJECT={_SPEC!r}: expected after_step:N, in_write:N:PATTERN or nan_after_step:N")
    from torch.optim.optimizer import register_optimizer_step_post_hook

    register_optimizer_step_post_hook(_on_step)
    builtins.open = _open
    shutil.copyfile = _copyfile
