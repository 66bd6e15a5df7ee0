"""fairseq-preprocess + fairseq-train + fairseq-validate/generate, as a user runs them
(real CLIs in subprocesses, ``--user-dir`` and ``--cpu``), on a generated corpus
(reversal through a fixed lexicon, ``projects/translation/toy_task.py``)."""
import os
import re

import pytest
import torch

pytest.importorskip("fairseq")

from projects.translation import toy_task  # noqa: E402

pytestmark = pytest.mark.slow

UPDATES = 200


@pytest.fixture(scope="module")
def data_bin(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy_mt")
    toy_task.write_corpus(str(root / "text"))
    return toy_task.preprocess(str(root / "text"), str(root / "data-bin"))


def _valid_loss(log: str) -> str:
    # the last "valid ... | loss 1.234 |" line
    found = re.findall(r"valid.*?\| loss ([0-9.]+)", log)
    assert found, log[-3000:]
    return found[-1]


def _env_without_override():
    env = dict(os.environ)
    env.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)  # the protection stays on
    return env


def _train_and_evaluate(data_bin, save_dir, arch):
    log = toy_task.train(data_bin, str(save_dir), arch, max_update=UPDATES)
    ckpt = os.path.join(save_dir, "checkpoint_last.pt")
    assert os.path.exists(ckpt), log[-3000:]
    gen = toy_task.generate(data_bin, ckpt)
    return log, ckpt, gen


def test_rescale_transformer_and_layernorm_baseline_train_translate_and_round_trip(data_bin, tmp_path):
    assert "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD" not in _env_without_override()
    os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
    results = {}
    for arch in ("rescale_transformer", "transformer"):
        log, ckpt, gen = _train_and_evaluate(data_bin, tmp_path / arch, arch)
        bleu = toy_task.parse_bleu(gen)
        results[arch] = bleu
        # round trip: fairseq-validate on the saved checkpoint reproduces the validation
        # loss that fairseq-train computed with the model before saving it
        val = toy_task.run(toy_task.fairseq_cli("fairseq-validate") + [
            data_bin, "--user-dir", toy_task.PLUGIN_DIR, "--cpu", "--path", ckpt, "--task", "translation",
            "--valid-subset", "valid", "--max-tokens", "1500",
        ], env=_env_without_override())
        assert _valid_loss(val) == _valid_loss(log), (arch, _valid_loss(val), _valid_loss(log))
        print(f"{arch}: BLEU {bleu:.2f} after {UPDATES} updates, valid loss {_valid_loss(log)}")
    # a clearly non-trivial translation (an untrained model scores about 0)
    assert results["rescale_transformer"] > 50, results
    assert results["transformer"] > 50, results


def test_checkpoint_holds_calibrated_model_without_layernorm(data_bin, tmp_path):
    """The checkpoint loads with weights_only on, holds the calibration, no LayerNorm,
    and a training-mode pass on it does not recalibrate."""
    import argparse

    from fairseq import checkpoint_utils, utils

    log = toy_task.train(data_bin, str(tmp_path), "rescale_transformer", max_update=20)
    utils.import_user_module(argparse.Namespace(user_dir=toy_task.PLUGIN_DIR))
    ckpt = os.path.join(tmp_path, "checkpoint_last.pt")
    state = torch.load(ckpt)  # weights_only=True, torch's default
    model_state = state["model"]
    assert not any("layer_norm" in k for k in model_state), log[-2000:]
    counts = [v for k, v in model_state.items() if k.endswith(".count")]
    assert len(counts) == 2 * 2 + 1 + 3 * 2 + 1 and all(int(c) == 8 for c in counts)
    models, _cfg, task = checkpoint_utils.load_model_ensemble_and_task([ckpt])
    model = models[0]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    task.load_dataset("valid")
    itr = task.get_batch_iterator(task.dataset("valid"), max_tokens=500).next_epoch_itr(shuffle=False)
    sample = next(iter(itr))
    with torch.no_grad():
        model(**sample["net_input"])
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_plugin_is_what_makes_weights_only_loading_work(data_bin, tmp_path):
    """fairseq-generate on fairseq's own checkpoint fails under torch 2.11 without the
    plugin (argparse.Namespace is not allowlisted) and works with --user-dir."""
    toy_task.train(data_bin, str(tmp_path), "transformer", max_update=5)
    ckpt = os.path.join(tmp_path, "checkpoint_last.pt")
    cmd = toy_task.fairseq_cli("fairseq-generate") + [
        data_bin, "--cpu", "--path", ckpt, "--gen-subset", "test", "--max-tokens", "2000",
    ]
    with pytest.raises(RuntimeError, match="Unsupported global: GLOBAL argparse.Namespace"):
        toy_task.run(cmd, env=_env_without_override())
    out = toy_task.run(cmd + ["--user-dir", toy_task.PLUGIN_DIR], env=_env_without_override())
    assert toy_task.parse_bleu(out) >= 0


def test_average_checkpoints_of_fairseq_train_then_generate(data_bin, tmp_path):
    """The recipe's checkpoint averaging on checkpoints fairseq-train wrote, then
    fairseq-generate on the average; a checkpoint from before the end of the AddBias
    calibration (update 5 < 8 passes) is refused."""
    import subprocess
    import sys

    toy_task.train(data_bin, str(tmp_path), "rescale_transformer", max_update=30,
                   extra=["--save-interval-updates", "5"])
    average = [sys.executable, "-m", "projects.translation.rescale_fairseq.average_checkpoints"]
    out = tmp_path / "averaged.pt"
    env = toy_task.cli_env(1)
    env.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)  # the protection stays on
    toy_task.run(average + ["--inputs", str(tmp_path), "--num-update-checkpoints", "3", "--output", str(out)],
                  env=env)
    gen = toy_task.generate(data_bin, str(out))
    assert toy_task.parse_bleu(gen) >= 0
    early = [p for p in os.listdir(tmp_path) if p.endswith("_5.pt")]
    assert len(early) == 1, os.listdir(tmp_path)
    proc = subprocess.run(average + ["--inputs", str(tmp_path / early[0]), str(tmp_path / "checkpoint_last.pt"),
                                     "--output", str(tmp_path / "bad.pt")],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    assert proc.returncode != 0 and "saved after calibration" in proc.stdout, proc.stdout[-2000:]
