"""The fairseq plugin's guards (projects/translation/rescale_fairseq/guards.py), in-process:
a truncated checkpoint_last.pt (a kill during fairseq's in-place copy) or one of another
language pair is refused before fairseq tries to load it, naming what to do; a diverging
run is stopped at its first non-finite output and reported with its update. The real
fairseq-train runs: tests/test_faults.py (slow) and benchmarks/fault_harness.py."""
import argparse
import os
import sys
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("fairseq")

from projects.translation.toy_task import load_plugin  # noqa: E402

guards = load_plugin().guards  # (imported as fairseq does: the model is registered once)


@pytest.fixture
def in_fairseq_train(monkeypatch):
    """What fairseq-train's process looks like to the guards."""
    monkeypatch.setitem(sys.modules, "fairseq_cli.train", SimpleNamespace())
    monkeypatch.setattr(guards, "training_state", {})


def _checkpoint(path, updates, src_vocab=24, tgt_vocab=24, pair=("src", "tgt")):
    torch.save({"model": {"encoder.embed_tokens.weight": torch.zeros(src_vocab, 4),
                          "decoder.embed_tokens.weight": torch.zeros(tgt_vocab, 4)},
                "cfg": {"task": {"source_lang": pair[0], "target_lang": pair[1]}},
                "optimizer_history": [{"num_updates": updates}]}, path)


def _task(src_vocab=24, tgt_vocab=24, pair=("src", "tgt")):
    return SimpleNamespace(cfg=SimpleNamespace(source_lang=pair[0], target_lang=pair[1], data="DATA"),
                           source_dictionary=[0] * src_vocab, target_dictionary=[0] * tgt_vocab)


def test_truncated_checkpoint_last_is_refused_naming_the_newest_complete_one(tmp_path, in_fairseq_train):
    for name, updates in (("checkpoint_1_3.pt", 3), ("checkpoint_2_9.pt", 9), ("checkpoint_best.pt", 6)):
        _checkpoint(tmp_path / name, updates)
    _checkpoint(tmp_path / "checkpoint_last.pt", 12)
    data = (tmp_path / "checkpoint_last.pt").read_bytes()
    (tmp_path / "checkpoint_last.pt").write_bytes(data[: len(data) // 2])
    args = argparse.Namespace(save_dir=str(tmp_path), restore_file="checkpoint_last.pt")
    with pytest.raises(ValueError, match=r"checkpoint_last.pt is truncated or corrupt .* --restore-file .*checkpoint_2_9.pt"):
        guards.check_restore_file(args, _task())
    # a complete one of the same pair and dictionaries is left to fairseq
    _checkpoint(tmp_path / "checkpoint_last.pt", 12)
    guards.check_restore_file(args, _task())


def test_resume_with_data_of_another_language_pair_is_refused(tmp_path, in_fairseq_train):
    _checkpoint(tmp_path / "checkpoint_last.pt", 5)
    args = argparse.Namespace(save_dir=str(tmp_path), restore_file="checkpoint_last.pt")
    with pytest.raises(ValueError, match=r"trained src->tgt .* this run reads DATA de->en"):
        guards.check_restore_file(args, _task(pair=("de", "en")))
    with pytest.raises(ValueError, match=r"vocabularies of 24 / 24 entries.* with 30 / 24"):
        guards.check_restore_file(args, _task(src_vocab=30))


def test_guards_stay_out_of_generate(tmp_path, monkeypatch):
    monkeypatch.delitem(sys.modules, "fairseq_cli.train", raising=False)
    (tmp_path / "checkpoint_last.pt").write_bytes(b"truncated")
    guards.check_restore_file(argparse.Namespace(save_dir=str(tmp_path), restore_file="checkpoint_last.pt"), _task())
    guards.check_finite_output(SimpleNamespace(training=True), torch.tensor([float("nan")]))


def test_first_non_finite_output_stops_training_naming_the_update(in_fairseq_train):
    guards.training_state["num_updates"] = 41
    guards.check_finite_output(SimpleNamespace(training=True), torch.zeros(2, 3))
    with pytest.raises(FloatingPointError, match="diverged at training update 42: the decoder output is not finite"):
        guards.check_finite_output(SimpleNamespace(training=True), torch.tensor([0.0, float("inf")]))
    with pytest.raises(FloatingPointError, match="at validation after update 42"):
        guards.check_finite_output(SimpleNamespace(training=False), torch.tensor([float("nan")]))


def test_divergence_report_names_the_update_after_fairseqs_traceback(tmp_path, in_fairseq_train, capsys):
    guards.training_state.update(num_updates=6, save_dir=str(tmp_path))
    (tmp_path / "crash.pt").write_bytes(b"")
    seen = []
    hook = guards.report_divergence(lambda *exc: seen.append(exc[0]))
    # fairseq's NanDetector fails while handling the FloatingPointError (torch 2.11)
    try:
        try:
            raise FloatingPointError("gradients are Nan/Inf")
        except FloatingPointError:
            raise StopIteration
    except StopIteration as e:
        hook(type(e), e, e.__traceback__)
    assert seen == [StopIteration]
    err = capsys.readouterr().err
    assert "diverged at update 7: gradients are Nan/Inf" in err and os.path.join(str(tmp_path), "crash.pt") in err
    assert "debugging only" in err
    assert f"no checkpoint had been saved in {tmp_path} yet" in err  # (none written before the failure)
    (tmp_path / "checkpoint_last.pt").write_bytes(b"")
    hook(FloatingPointError, FloatingPointError("gradients are Nan/Inf"), None)
    assert f"checkpoint_last.pt in {tmp_path} holds an earlier save" in capsys.readouterr().err
    hook(ValueError, ValueError("unrelated"), None)
    assert capsys.readouterr().err == ""


def test_vocabulary_mismatch_on_load_is_named():
    model = SimpleNamespace(encoder=SimpleNamespace(dictionary=[0] * 24), decoder=SimpleNamespace(dictionary=[0] * 30))
    guards.check_vocabulary_sizes(model, {"encoder.embed_tokens.weight": torch.zeros(24, 2),
                                          "decoder.embed_tokens.weight": torch.zeros(30, 2)})
    with pytest.raises(ValueError, match="decoder vocabulary has 24 entries, the dictionary of the data directory 30"):
        guards.check_vocabulary_sizes(model, {"decoder.embed_tokens.weight": torch.zeros(24, 2)})
