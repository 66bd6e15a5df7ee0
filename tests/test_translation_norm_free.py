"""The normalization-free peers of rescale_transformer (rescale_fairseq/norm_free.py):
``dyt_transformer`` (DyT) and ``noln_transformer`` (LayerNorm -> identity)."""
import argparse
import os
import types

import pytest
import torch
from torch import nn

pytest.importorskip("fairseq")
from fairseq import checkpoint_utils, options, utils  # noqa: E402
from fairseq.data import Dictionary  # noqa: E402
from fairseq.models import ARCH_MODEL_REGISTRY  # noqa: E402

from projects.translation import toy_task  # noqa: E402

SMALL = [
    "--encoder-layers", "2", "--decoder-layers", "2",
    "--encoder-embed-dim", "32", "--decoder-embed-dim", "32",
    "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64",
    "--encoder-attention-heads", "4", "--decoder-attention-heads", "4", "--dropout", "0",
]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _plugin():
    utils.import_user_module(argparse.Namespace(user_dir=toy_task.PLUGIN_DIR))
    import rescale_fairseq

    return rescale_fairseq


def _build(arch, extra=()):
    _plugin()
    args = options.parse_args_and_arch(
        options.get_training_parser(),
        ["unused", "--user-dir", toy_task.PLUGIN_DIR, "--arch", arch, "--cpu", *SMALL, *extra],
    )
    d = Dictionary()
    for i in range(20):
        d.add_symbol(f"w{i}")
    task = types.SimpleNamespace(source_dictionary=d, target_dictionary=d)
    return ARCH_MODEL_REGISTRY[arch].build_model(args, task), d


def _batch(d, bsz=4, length=6):
    g = torch.Generator().manual_seed(0)
    src = torch.randint(d.nspecial, len(d), (bsz, length), generator=g)
    tgt = torch.randint(d.nspecial, len(d), (bsz, length), generator=g)
    prev = torch.cat([torch.full((bsz, 1), d.eos()), tgt[:, :-1]], 1)
    return src, torch.full((bsz,), length), prev, tgt


def _norm_counts(model):
    plugin = _plugin()
    return (sum(isinstance(m, nn.LayerNorm) for m in model.modules()),
            sum(isinstance(m, plugin.DynamicTanh) for m in model.modules()))


def test_architectures_are_registered_with_fairseqs_presets():
    _plugin()
    for name in ("dyt_transformer", "noln_transformer"):
        for suffix in ("", "_wmt_en_de", "_iwslt_de_en"):
            assert name + suffix in ARCH_MODEL_REGISTRY, name + suffix
    args = options.parse_args_and_arch(
        options.get_training_parser(),
        ["unused", "--user-dir", toy_task.PLUGIN_DIR, "--arch", "dyt_transformer_iwslt_de_en"])
    assert (args.encoder_embed_dim, args.encoder_ffn_embed_dim, args.encoder_attention_heads) == (512, 1024, 4)
    assert args.encoder_normalize_before and args.decoder_normalize_before and args.dyt_alpha_init == 0.5


def test_dynamic_tanh_is_gamma_tanh_alpha_x_plus_beta():
    dyt = _plugin().DynamicTanh(5, alpha_init=0.5)
    assert dyt.alpha.shape == (1,) and dyt.alpha.item() == 0.5
    assert torch.equal(dyt.weight, torch.ones(5)) and torch.equal(dyt.bias, torch.zeros(5))
    with torch.no_grad():
        dyt.weight.copy_(torch.arange(5.0))
        dyt.bias.fill_(0.25)
        dyt.alpha.fill_(2.0)
    x = torch.randn(3, 2, 5)
    assert torch.allclose(dyt(x), torch.arange(5.0) * torch.tanh(2.0 * x) + 0.25)


def test_dyt_replaces_every_layernorm_of_the_pre_ln_model():
    ln_model, _ = _build("transformer", ["--encoder-normalize-before", "--decoder-normalize-before"])
    expected, _ = _norm_counts(ln_model)
    # 2 per encoder layer + 3 per decoder layer + one after each stack
    assert expected == 2 * 2 + 3 * 2 + 2
    model, _ = _build("dyt_transformer")
    assert _norm_counts(model) == (0, expected)
    assert isinstance(model.encoder.layer_norm, _plugin().DynamicTanh)  # the pre-LN model's final norm
    # an added LayerNorm (--layernorm-embedding) is replaced too
    model, _ = _build("dyt_transformer", ["--layernorm-embedding"])
    assert _norm_counts(model) == (0, expected + 2)
    model, _ = _build("dyt_transformer", ["--dyt-alpha-init", "1.5"])
    assert {m.alpha.item() for m in model.modules() if isinstance(m, _plugin().DynamicTanh)} == {1.5}


def test_noln_is_the_same_transformer_with_identities():
    ref, _ = _build("transformer")
    model, _ = _build("noln_transformer")
    assert _norm_counts(model) == (0, 0)
    identities = sum(isinstance(m, nn.Identity) for m in model.modules())
    assert identities == _norm_counts(ref)[0] == 2 * 2 + 3 * 2
    # nothing else changed: the same parameters, less the LayerNorms' weights and biases
    ln_names = {n for n, m in ref.named_modules() if isinstance(m, nn.LayerNorm)}
    kept = {n for n, _ in ref.named_parameters() if n.rsplit(".", 1)[0] not in ln_names}
    assert {n for n, _ in model.named_parameters()} == kept


@pytest.mark.parametrize("arch", ["dyt_transformer", "noln_transformer"])
def test_forward_backward_and_state_dict_round_trip(arch):
    model, d = _build(arch)
    src, lengths, prev, tgt = _batch(d)
    model.train()
    logits = model(src, lengths, prev)[0]
    loss = nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), tgt.view(-1))
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    if arch == "dyt_transformer":
        alphas = [m.alpha.grad for m in model.modules() if isinstance(m, _plugin().DynamicTanh)]
        assert all(a.abs().item() > 0 for a in alphas)  # every alpha is learnt
    model.eval()
    again, _ = _build(arch)
    again.load_state_dict(model.state_dict())
    again.eval()
    with torch.no_grad():
        assert torch.equal(model(src, lengths, prev)[0], again(src, lengths, prev)[0])


@pytest.fixture(scope="module")
def toy_data_bin(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy_norm_free")
    toy_task.write_corpus(str(root / "text"), n_train=200, n_valid=20, n_test=20)
    return toy_task.preprocess(str(root / "text"), str(root / "data-bin"))


@pytest.mark.parametrize("arch", ["dyt_transformer", "noln_transformer"])
def test_fairseq_train_smoke_and_checkpoint_loads_back(arch, toy_data_bin, tmp_path):
    log = toy_task.train(toy_data_bin, str(tmp_path), arch, max_update=3)
    assert "num_updates 3" in log, log[-2000:]
    ckpt = os.path.join(tmp_path, "checkpoint_last.pt")
    _plugin()
    models, cfg, _task = checkpoint_utils.load_model_ensemble_and_task([ckpt])  # weights_only stays on
    assert cfg.model.arch == arch and _norm_counts(models[0])[0] == 0
    state = torch.load(ckpt)["model"]
    for name, value in models[0].state_dict().items():
        assert torch.equal(value, state[name]), name


def test_the_diagnostic_counts_saturated_dyt_entries():
    # benchmarks/translation_diagnose.py trained: how DyT 18+18 was found stuck (|alpha x| > 2)
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
    from translation_diagnose import DyTSaturation

    model = nn.Sequential(_plugin().DynamicTanh(4, alpha_init=0.5), nn.Linear(4, 4))
    probe = DyTSaturation(model)
    model(torch.tensor([[1.0, -3.0, 5.0, -10.0], [0.0, 4.5, -2.0, 3.9]]))  # alpha x beyond 2: 5, -10, 4.5
    (name, s), = probe.stats.items()
    assert name == "0" and s["alpha"] == 0.5 and s["max"] == [10.0]
    assert s["saturated"] == [pytest.approx(3 / 8)]
    assert s["rms"] == [pytest.approx(torch.tensor([1.0, 9, 25, 100, 0, 20.25, 4, 15.21]).mean().sqrt().item())]
