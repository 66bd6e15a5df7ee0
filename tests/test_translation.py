"""The fairseq plugin ``rescale_transformer`` (projects/translation/rescale_fairseq), in process."""
import argparse
import copy
import fractions
import io
import math
import os
import types

import pytest
import torch
import torch.distributed as dist
from torch import nn

fairseq = pytest.importorskip("fairseq")
from fairseq import options, utils  # noqa: E402
from fairseq.data import Dictionary  # noqa: E402
from fairseq.models import ARCH_MODEL_REGISTRY  # noqa: E402

from dist_utils import run_distributed  # noqa: E402
from projects.translation.toy_task import PLUGIN_DIR  # noqa: E402
from rescalenet.layers import AddBias, RescaledResidual, is_calibrated  # noqa: E402
from rescalenet.transformer import init_attention_branch_, init_feedforward_branch_  # noqa: E402

ARCHS = [
    "rescale_transformer",
    "rescale_transformer_wmt_en_de",
    "rescale_transformer_vaswani_wmt_en_de_big",
    "rescale_transformer_iwslt_de_en",
]


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny matrices: one thread is faster than two, and much faster on a busy machine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _plugin():
    # the single import route fairseq uses (--user-dir): top-level module ``rescale_fairseq``
    utils.import_user_module(argparse.Namespace(user_dir=PLUGIN_DIR))
    import rescale_fairseq

    return rescale_fairseq


def _dictionary(n=20):
    d = Dictionary()
    for i in range(n):
        d.add_symbol(f"w{i}")
    return d


def _args(arch="rescale_transformer", extra=()):
    _plugin()
    parser = options.get_training_parser()
    return options.parse_args_and_arch(
        parser, ["unused-data-dir", "--user-dir", PLUGIN_DIR, "--arch", arch, "--cpu", *extra]
    )


def _small(layers=2, dim=32, extra=()):
    return [
        "--encoder-layers", str(layers), "--decoder-layers", str(layers),
        "--encoder-embed-dim", str(dim), "--decoder-embed-dim", str(dim),
        "--encoder-ffn-embed-dim", str(2 * dim), "--decoder-ffn-embed-dim", str(2 * dim),
        "--encoder-attention-heads", "4", "--decoder-attention-heads", "4",
        "--dropout", "0", *extra,
    ]


def _build(args, vocab=20):
    plugin = _plugin()
    d = _dictionary(vocab)
    task = types.SimpleNamespace(source_dictionary=d, target_dictionary=d)
    return plugin.RescaleTransformerModel.build_model(args, task), d


def _batch(d, bsz=6, length=7, gen=None, pad_to=None):
    gen = gen or torch.Generator().manual_seed(0)
    tokens = torch.randint(d.nspecial, len(d), (bsz, length), generator=gen)
    if pad_to is not None:  # right padding, fairseq's target convention
        tokens = torch.cat([tokens, torch.full((bsz, pad_to - length), d.pad())], dim=1)
    return tokens


def _forward(model, src, tgt):
    lengths = src.ne(model.encoder.padding_idx).sum(1)
    return model(src, lengths, tgt)[0]


def test_architectures_are_registered_and_layer_fairseqs_presets():
    plugin = _plugin()
    for arch in ARCHS:
        assert ARCH_MODEL_REGISTRY[arch] is plugin.RescaleTransformerModel
    big = _args("rescale_transformer_vaswani_wmt_en_de_big")
    assert (big.encoder_embed_dim, big.encoder_ffn_embed_dim, big.encoder_attention_heads) == (1024, 4096, 16)
    assert big.dropout == 0.3 and big.rescale_multiplier == "scalar" and big.rescale_c is None
    base = _args("rescale_transformer_wmt_en_de")
    ref = options.parse_args_and_arch(options.get_training_parser(), ["x", "--arch", "transformer_wmt_en_de"])
    for key in ("encoder_embed_dim", "encoder_ffn_embed_dim", "encoder_layers", "decoder_layers", "dropout"):
        assert getattr(base, key) == getattr(ref, key)
    iwslt = _args("rescale_transformer_iwslt_de_en")
    assert (iwslt.encoder_ffn_embed_dim, iwslt.encoder_attention_heads) == (1024, 4)
    # user flags win over the preset, as for fairseq's own architectures
    assert _args("rescale_transformer_wmt_en_de", ["--dropout", "0.2"]).dropout == 0.2


def test_no_layernorm_anywhere_and_addbias_before_every_sublayer():
    model, _ = _build(_args(extra=_small(layers=3)))
    names = [type(m).__name__ for m in model.modules()]
    assert not any("LayerNorm" in n for n in names)
    assert not any(isinstance(m, nn.LayerNorm) for m in model.modules())
    assert not any("layer_norm" in k or "layernorm" in k for k in model.state_dict())
    enc, dec = model.encoder, model.decoder
    # one AddBias per sublayer + one at each stack's output
    assert sum(isinstance(m, AddBias) for m in enc.modules()) == 2 * 3 + 1
    assert sum(isinstance(m, AddBias) for m in dec.modules()) == 3 * 3 + 1
    assert sum(isinstance(m, RescaledResidual) for m in model.modules()) == 2 * 3 + 3 * 3
    layer = enc.layers[0]
    # fairseq's forward finds the AddBias in its pre-sublayer slot; fc1's bias moved before it
    assert layer.self_attn_layer_norm is layer.self_attn_bias and layer.final_layer_norm is layer.ffn_bias
    assert dec.layers[0].encoder_attn_layer_norm is dec.layers[0].encoder_attn_bias
    assert enc.layer_norm is enc.final_bias and dec.layer_norm is dec.final_bias
    assert layer.fc1.bias is None and layer.normalize_before


@pytest.mark.parametrize("c", [None, 0, 5])
def test_coefficients_keep_variance_and_equal_contribution(c):
    extra = _small(layers=4, dim=64) + ([] if c is None else ["--rescale-c", str(c)])
    model, _ = _build(_args(extra=extra))
    for stack, per_layer in ((model.encoder, 2), (model.decoder, 3)):
        L = per_layer * len(stack.layers)
        cc = L - 1 if c is None else c
        sums = [m for m in stack.modules() if isinstance(m, RescaledResidual)]
        assert len(sums) == L
        for i, res in enumerate(sums):  # modules() lists them in forward order
            k = cc + i
            assert res.shortcut_scale == pytest.approx(math.sqrt(k / (k + 1)))
            assert res.residual_scale == pytest.approx(1 / math.sqrt(L))
        weights = []
        for layer in stack.layers:
            branches = [(layer.self_attn.v_proj, layer.self_attn.out_proj, False)]
            if getattr(layer, "encoder_attn", None) is not None:
                branches.append((layer.encoder_attn.v_proj, layer.encoder_attn.out_proj, False))
            branches.append((layer.fc1, layer.fc2, True))
            for a, b, relu in branches:
                # std of each homogeneous layer / base std = its init gain
                ga = a.weight.std().item() * math.sqrt(a.weight.shape[1] / (2 if relu else 1))
                gb = b.weight.std().item() * math.sqrt(b.weight.shape[1])
                weights.append(ga * gb)
        betas = [res.residual_scale * w for res, w in zip(sums, weights)]
        for res, beta in zip(sums, betas):
            # alpha_k^2 + beta_k^2 = 1 (beta measured from the sampled init)
            assert beta == pytest.approx(math.sqrt(1 - res.shortcut_scale**2), rel=0.06)
        # every branch reaches the stack output with the same weight 1 / sqrt(c + L)
        reach = [beta * math.prod(r.shortcut_scale for r in sums[i + 1:]) for i, beta in enumerate(betas)]
        assert reach == pytest.approx([1 / math.sqrt(cc + L)] * L, rel=0.08)  # sampled stds


@pytest.mark.parametrize("count", ["stack", "model", "type"])
@pytest.mark.parametrize("c", [None, 2])
def test_rescale_count_decides_what_one_chain_of_sums_is(count, c):
    enc_layers, dec_layers = 2, 3
    extra = _small(dim=32) + ["--encoder-layers", str(enc_layers), "--decoder-layers", str(dec_layers),
                              "--rescale-count", count] + ([] if c is None else ["--rescale-c", str(c)])
    model, _ = _build(_args(extra=extra))
    total = 2 * enc_layers + 3 * dec_layers
    expected = {  # (k of each sum in forward order, L) per stack, written out from the definitions
        "stack": [([(3 if c is None else c) + i for i in range(4)], 4),
                  ([(8 if c is None else c) + i for i in range(9)], 9)],
        "model": [([(total - 1 if c is None else c) + i for i in range(4)], total),
                  ([(total - 1 if c is None else c) + 4 + i for i in range(9)], total)],
        "type": [([(1 if c is None else c) + i // 2 for i in range(4)], 2),
                 ([(2 if c is None else c) + i // 3 for i in range(9)], 3)],
    }[count]
    for stack, (ks, L) in zip((model.encoder, model.decoder), expected):
        sums = [m for m in stack.modules() if isinstance(m, RescaledResidual)]
        assert [r.shortcut_scale for r in sums] == pytest.approx([math.sqrt(k / (k + 1)) for k in ks])
        assert all(r.residual_scale == pytest.approx(1 / math.sqrt(L)) for r in sums)
        # each sum keeps the variance whatever the count: its branch init carries sqrt(L / (k + 1))
        fc2_gains = [layer.fc2.weight.std().item() * math.sqrt(layer.fc2.weight.shape[1]) for layer in stack.layers]
        per_layer = len(sums) // len(stack.layers)
        for layer, gain in enumerate(fc2_gains):
            k = ks[layer * per_layer + per_layer - 1]  # the feed-forward sum is a layer's last
            assert gain == pytest.approx((L / (k + 1)) ** 0.25, rel=0.08)


def test_the_default_count_is_per_stack():
    args = _args(extra=_small())
    assert args.rescale_count == "stack"
    with pytest.raises(SystemExit):  # argparse refuses an unknown choice
        _args(extra=_small() + ["--rescale-count", "stacks"])
    args.rescale_count = "both"  # set in code past argparse
    with pytest.raises(ValueError, match="--rescale-count must be one of stack, model, type, got 'both'"):
        _build(args)


def _sublayer_variances(model, d, steps=8):
    """Calibrate, then record the variance of every residual sum's output (real tokens)."""
    gen = torch.Generator().manual_seed(1)
    model.train()
    with torch.no_grad():
        for _ in range(steps):
            _forward(model, _batch(d, 8, 12, gen), _batch(d, 8, 12, gen))
    assert is_calibrated(model)
    model.eval()
    out = {"encoder": [], "decoder": []}
    hooks = [
        m.register_forward_hook(lambda mod, inp, o, key=key: out[key].append(o.float().var().item()))
        for key, stack in (("encoder", model.encoder), ("decoder", model.decoder))
        for m in stack.modules() if isinstance(m, RescaledResidual)
    ]
    with torch.no_grad():
        _forward(model, _batch(d, 32, 12, gen), _batch(d, 32, 12, gen))
    for h in hooks:
        h.remove()
    return out


def _make_plain(model):
    """The same network as a plain ``x + F(x)`` stack: shortcut 1, branch 1, and
    variance-preserving branches (the gains of a depth-1 stack, i.e. 1)."""
    for stack in (model.encoder, model.decoder):
        for layer in stack.layers:
            init_attention_branch_(layer.self_attn.v_proj, layer.self_attn.out_proj, 0, 1)
            if getattr(layer, "encoder_attn", None) is not None:
                init_attention_branch_(layer.encoder_attn.v_proj, layer.encoder_attn.out_proj, 0, 1)
            init_feedforward_branch_(layer.fc1, layer.fc2, 0, 1)
        for m in stack.modules():
            if isinstance(m, RescaledResidual):
                m.shortcut_scale, m.residual_scale = 1.0, 1.0
    return model


def test_variance_stays_flat_with_depth_while_plain_residuals_grow():
    ratios = {}
    for layers in (6, 12):
        torch.manual_seed(0)
        model, d = _build(_args(extra=_small(layers=layers, dim=64)), vocab=40)
        plain = _make_plain(copy.deepcopy(model))
        for name, net in (("rescale", model), ("plain", plain)):
            var = _sublayer_variances(net, d)
            for key, v in var.items():
                ratios[name, layers, key] = (max(v) / min(v), v[-1] / v[0])
    for layers in (6, 12):
        for key in ("encoder", "decoder"):
            spread, growth = ratios["rescale", layers, key]
            assert spread < 2.0, (layers, key, spread)
            plain_spread, plain_growth = ratios["plain", layers, key]
            assert plain_growth > 8 * growth, (layers, key, plain_growth, growth)
    # and doubling the depth leaves the rescaled profile flat, while the plain one keeps growing
    for key in ("encoder", "decoder"):
        assert ratios["rescale", 12, key][1] < 1.5 * ratios["rescale", 6, key][1]
        assert ratios["plain", 12, key][1] > 4 * ratios["plain", 6, key][1]


def test_padding_is_left_out_of_the_calibration_means():
    model, d = _build(_args(extra=_small(layers=2)))
    padded = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(3)
    src, tgt = _batch(d, 5, 6, gen), _batch(d, 5, 6, gen)
    model.train(), padded.train()
    with torch.no_grad():
        _forward(model, src, tgt)
        # the same sentences, right-padded to 10: the pad positions must not count
        pads = torch.full((5, 4), d.pad())
        _forward(padded, torch.cat([src, pads], 1), torch.cat([tgt, pads], 1))
    means = {n: b for n, b in model.named_buffers() if n.endswith("init_mean")}
    pmeans = {n: b for n, b in padded.named_buffers() if n.endswith("init_mean")}
    assert len(means) == 2 * 2 + 1 + 3 * 2 + 1
    for n in means:
        torch.testing.assert_close(pmeans[n], means[n], rtol=1e-5, atol=1e-5)


def test_state_dict_round_trip_restores_calibration_and_outputs():
    model, d = _build(_args(extra=_small(layers=2)))
    gen = torch.Generator().manual_seed(4)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(10):  # calibration + a few updates that move biases and multipliers
        src, tgt = _batch(d, 4, 6, gen), _batch(d, 4, 6, gen)
        loss = _forward(model, src, tgt).logsumexp(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert is_calibrated(model)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    restored, _ = _build(_args(extra=_small(layers=2)))
    assert not is_calibrated(restored)
    restored.load_state_dict(torch.load(buf, weights_only=True))
    assert is_calibrated(restored)
    restored.train()
    with torch.no_grad():
        _forward(restored, _batch(d, 4, 6, gen), _batch(d, 4, 6, gen))  # must not recalibrate
    for (n, a), b in zip(model.state_dict().items(), restored.state_dict().values()):
        assert torch.equal(a, b), n
    model.eval(), restored.eval()
    src, tgt = _batch(d, 3, 5, gen), _batch(d, 3, 5, gen)
    with torch.no_grad():
        torch.testing.assert_close(_forward(restored, src, tgt), _forward(model, src, tgt), rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["scalar", "vector", "none"])
def test_multiplier_kinds(kind):
    model, d = _build(_args(extra=_small(layers=1, extra=["--rescale-multiplier", kind])))
    scales = [m._scale for m in model.modules() if isinstance(m, RescaledResidual)]
    if kind == "none":
        assert all(s is None for s in scales)
    else:
        assert all(s.numel() == (32 if kind == "vector" else 1) for s in scales)
    out = _forward(model.train(), _batch(d), _batch(d))
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("kind", ["scalar", "vector"])
def test_multiplier_lr_reparameterizes_without_changing_the_model_at_init(kind):
    """m_k = F * p_k: the same function at init; one Adam step moves m_k F times as far."""
    extra = ["--rescale-multiplier", kind]
    torch.manual_seed(0)
    base, d = _build(_args(extra=_small(layers=1, extra=extra)))
    torch.manual_seed(0)
    fast, _ = _build(_args(extra=_small(layers=1, extra=extra + ["--rescale-multiplier-lr", "4"])))
    src, tgt = _batch(d), _batch(d)
    for model in (base, fast):  # the same calibration batches
        model.train()
        for _ in range(8):
            _forward(model, src, tgt)
    base.eval(), fast.eval()
    with torch.no_grad():
        assert torch.allclose(_forward(base, src, tgt), _forward(fast, src, tgt), atol=1e-5)
    moved = []
    for model in (base, fast):
        sums = [m for m in model.modules() if isinstance(m, RescaledResidual)]
        before = [m.branch_weight().detach().clone() for m in sums]
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        _forward(model, src, tgt).logsumexp(-1).mean().backward()
        opt.step()
        moved.append(torch.cat([(m.branch_weight().detach() - b).abs().flatten() for m, b in zip(sums, before)]))
    assert torch.allclose(moved[1], 4 * moved[0], rtol=1e-3, atol=1e-9)
    with pytest.raises(ValueError, match="--rescale-multiplier-lr must be > 0"):
        _build(_args(extra=_small() + ["--rescale-multiplier-lr", "0"]))


def test_clear_errors_for_bad_options(capsys):
    with pytest.raises(SystemExit):  # argparse: invalid choice
        _args(extra=["--rescale-multiplier", "matrix"])
    assert "invalid choice: 'matrix'" in capsys.readouterr().err
    args = _args(extra=_small())
    args.rescale_multiplier = "matrix"  # e.g. a namespace built in code
    with pytest.raises(ValueError, match="--rescale-multiplier must be one of scalar, vector, none"):
        _build(args)
    with pytest.raises(ValueError, match=r"--encoder-layers >= 1, got 0"):
        _build(_args(extra=_small() + ["--encoder-layers", "0"]))
    with pytest.raises(ValueError, match=r"--decoder-layers >= 1, got 0"):
        _build(_args(extra=_small() + ["--decoder-layers", "0"]))
    with pytest.raises(ValueError, match="--rescale-c must be >= 0"):
        _build(_args(extra=_small() + ["--rescale-c", "-1"]))
    for flag in ("--encoder-normalize-before", "--decoder-normalize-before", "--layernorm-embedding"):
        with pytest.raises(ValueError, match=f"no LayerNorm.*{flag}"):
            _build(_args(extra=_small() + [flag]))
    with pytest.raises(ValueError, match="checkpoint-activations"):
        _build(_args(extra=_small() + ["--checkpoint-activations"]))
    with pytest.raises(ValueError, match="--store-ema"):
        _build(_args(extra=_small() + ["--store-ema"]))
    with pytest.raises(ValueError, match=r"--quant-noise-pq zeroes weight blocks.*fairseq issue #3783"):
        _build(_args(extra=_small() + ["--quant-noise-pq", "0.1"]))


def test_weights_only_loading_allowlists_fairseq_objects_only(tmp_path):
    plugin = _plugin()
    path = tmp_path / "ckpt.pt"
    # what fairseq-train's checkpoints hold beyond tensors (see safe_globals.py)
    torch.save({"args": None, "cfg": {"model": argparse.Namespace(arch="rescale_transformer", dropout=0.1)}}, path)
    plugin.safe_globals.register_fairseq_safe_globals()
    state = torch.load(path)  # weights_only=True is torch's default
    assert state["cfg"]["model"].arch == "rescale_transformer"
    assert "argparse.Namespace" in plugin.safe_globals.fairseq_safe_globals_names()

    torch.save({"x": fractions.Fraction(1, 3)}, tmp_path / "other.pt")  # anything else: still refused
    with pytest.raises(Exception, match="Unsupported global"):
        torch.load(tmp_path / "other.pt")


def test_average_checkpoints_means_weights_and_refuses_uncalibrated_inputs(tmp_path):
    _plugin()
    import rescale_fairseq.average_checkpoints as average

    model, d = _build(_args(extra=_small()))
    src, tgt = _batch(d), _batch(d, length=5)
    paths, states = [], []
    for step in range(3):  # three "checkpoints" of one calibrated, changing model
        with torch.no_grad():
            model.train()
            _forward(model, src, tgt)
            for p in model.parameters():
                p.add_(0.01 * torch.randn_like(p))
        states.append({k: v.clone() for k, v in model.state_dict().items()})
        paths.append(str(tmp_path / f"checkpoint_1_{100 * (step + 1)}.pt"))
        torch.save({"cfg": {"model": argparse.Namespace(arch="rescale_transformer")}, "model": states[-1],
                    "last_optimizer_state": {"step": step}}, paths[-1])
    for _ in range(5):  # complete the calibration: counters equal from here on
        _forward(model, src, tgt)
    for i, state in enumerate(states):
        state.update({k: v.clone() for k, v in model.state_dict().items() if not v.is_floating_point()})
        torch.save({"cfg": {"model": argparse.Namespace(arch="rescale_transformer")}, "model": state,
                    "last_optimizer_state": {"step": i}}, paths[i])
    out = tmp_path / "averaged.pt"
    average.main(["--inputs", str(tmp_path), "--num-update-checkpoints", "2", "--output", str(out)])
    average.register_fairseq_safe_globals()
    avg = torch.load(out)  # weights_only: loads with the plugin's allowlist
    assert avg["last_optimizer_state"] == {"step": 2}  # the newest input comes first
    for key, value in avg["model"].items():
        if value.is_floating_point():
            torch.testing.assert_close(value, (states[1][key] + states[2][key]) / 2)
        else:
            assert torch.equal(value, states[2][key])
    model.load_state_dict(avg["model"])
    assert is_calibrated(model)

    stale = dict(states[0], **{k: torch.zeros_like(v) for k, v in states[0].items() if k.endswith(".count")})
    torch.save({"model": stale}, tmp_path / "early.pt")
    with pytest.raises(ValueError, match="count differs.*saved after calibration"):
        average.average_checkpoints([paths[2], str(tmp_path / "early.pt")])
    with pytest.raises(ValueError, match=r"holds 3 checkpoint_<epoch>_<update>.pt files .*, 4 requested"):
        average.main(["--inputs", str(tmp_path), "--num-update-checkpoints", "4", "--output", str(out)])


def _ddp_rank(rank, world_size, out_dir):
    torch.set_num_threads(1)
    torch.manual_seed(0)  # same init on every rank
    model, d = _build(_args(extra=_small(layers=2)))
    ddp = nn.parallel.DistributedDataParallel(model, broadcast_buffers=False)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(10 + rank)  # different data per rank
    for step in range(10):
        src = _batch(d, 4, 6, gen)
        tgt = _batch(d, 4, 5, gen, pad_to=7 if rank else None)  # padding on rank 1 only
        if rank == 0:
            tgt = torch.cat([tgt, _batch(d, 4, 2, gen)], 1)
        loss = ddp(src, src.ne(d.pad()).sum(1), tgt)[0].logsumexp(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.save({k: v.clone() for k, v in model.state_dict().items()}, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.barrier()


def test_ddp_gloo_keeps_calibration_means_and_weights_identical_across_ranks(tmp_path):
    out = run_distributed(_ddp_rank, tmp_path)
    r0 = torch.load(os.path.join(out, "rank0.pt"))
    r1 = torch.load(os.path.join(out, "rank1.pt"))
    means = [k for k in r0 if k.endswith("init_mean")]
    assert len(means) == 2 * 2 + 1 + 3 * 2 + 1
    for k in r0:
        torch.testing.assert_close(r0[k], r1[k], rtol=0, atol=0, msg=k)
    assert all(int(r0[k]) == 8 for k in r0 if k.endswith(".count"))


def test_bfloat16_paths_autocast_and_cast_model():
    """fairseq-train --bf16 needs a TPU/GPU (on a CPU it fails inside fairseq's trainer), so the
    dtype paths are checked here: autocast training steps, then the whole model cast to bf16."""
    model, d = _build(_args(extra=_small(layers=2)))
    src, tgt = _batch(d), _batch(d)
    model.train()
    for _ in range(9):  # 8 calibration passes under autocast, then a normal step
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = _forward(model, src, tgt)
        assert out.dtype == torch.bfloat16
        out.float().logsumexp(-1).mean().backward()
    assert all(is_calibrated(m) for m in model.modules() if isinstance(m, AddBias))
    assert all(torch.isfinite(p.grad).all() and p.dtype == torch.float32 for p in model.parameters())
    means = [m for n, m in model.named_buffers() if n.endswith("init_mean")]
    assert means and all(m.dtype == torch.float32 for m in means)  # statistics kept in float32
    model.eval()
    with torch.no_grad():
        ref = _forward(model, src, tgt)
        low = _forward(copy.deepcopy(model).to(torch.bfloat16), src, tgt)
    assert low.dtype == torch.bfloat16 and torch.isfinite(low).all()
    assert (low.float() - ref).abs().max() < 0.1 * ref.abs().max()


def test_the_plugins_reader_survives_a_safe_globals_block_elsewhere(tmp_path):
    """timm's load_checkpoint opens ``torch.serialization.safe_globals([argparse.Namespace])``,
    whose exit removes Namespace from the allowlist even when it was there before: after any
    timm checkpoint load, fairseq checkpoints stopped loading in that process. The plugin's
    reader allowlists again before every load."""
    _plugin()
    from fairseq import checkpoint_utils

    path = tmp_path / "checkpoint_last.pt"
    torch.save({"args": None, "cfg": {"model": argparse.Namespace(arch="rescale_transformer")},
                "model": {"w": torch.ones(2)}, "extra_state": {"epoch": 1}, "last_optimizer_state": {},
                "optimizer_history": [{"criterion_name": "c", "optimizer_name": "o", "num_updates": 3,
                                       "lr_scheduler_state": {"best": 1.0}}]}, path)
    with torch.serialization.safe_globals([argparse.Namespace]):  # what timm's load_checkpoint does
        pass
    assert argparse.Namespace not in torch.serialization.get_safe_globals()  # (torch's behaviour)
    state = checkpoint_utils.load_checkpoint_to_cpu(str(path))  # fairseq-generate, --restore-file, resume
    assert state["cfg"].model.arch == "rescale_transformer" and torch.equal(state["model"]["w"], torch.ones(2))
