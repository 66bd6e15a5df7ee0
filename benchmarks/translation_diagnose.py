"""Why does rescale_transformer learn the generated reordering task slower than LayerNorm?

Two parts (issue 14, item 0):

``probe``: in process, the same batches for every model, fairseq's models built as
fairseq-train builds them; over the first updates it logs, per layer, the RMS of
the layer's output (the residual stream), the RMS of the loss gradient at that
output, and for every attention the standard deviation of its logits and the
entropy of its softmax (normalised by log of the number of keys: 1 = uniform,
0 = one key). A model that has not learnt *where* to attend keeps entropy ~1.

``probe --bf16``: the same under ``torch.autocast("cpu", bfloat16)``, with the
largest |activation| of every layer output over the run (issue 14, item 4).

``variants``: fairseq-train / fairseq-generate runs on the generated task, one
change at a time (``VARIANTS``), BLEU and valid loss after the same updates.
Resumable: each run writes runs/translation_diag/<task>/<variant>_s<seed>.json.

The task is the issue's: reversal through a 40-word lexicon (``toy_task``), 3+3
layers, 64-d, FFN 128, 4 heads, Adam 1e-3 (inverse-sqrt, warm-up 100), no dropout,
label smoothing 0.1, 300 updates.

    python benchmarks/translation_diagnose.py probe --steps 300
    python benchmarks/translation_diagnose.py variants --seeds 1 2
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import statistics
import sys
import types
from typing import Dict, List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import ROOT, table  # noqa: E402
from bench_translation_real import METHODS, Config  # noqa: E402  (the real-text table's methods and sizes)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from projects.translation import toy_task  # noqa: E402

OUT = os.path.join(ROOT, "runs", "translation_diag")
MODEL = [
    "--encoder-layers", "3", "--decoder-layers", "3",
    "--encoder-embed-dim", "64", "--decoder-embed-dim", "64",
    "--encoder-ffn-embed-dim", "128", "--decoder-ffn-embed-dim", "128",
    "--encoder-attention-heads", "4", "--decoder-attention-heads", "4",
]
RECIPE = ["--lr", "1e-3"]  # the rest is toy_task.train's recipe (inverse_sqrt, warm-up 100, dropout 0)

# name: (arch, extra fairseq-train arguments): one change at a time from "rescale"
VARIANTS: Dict[str, tuple] = {
    "postln": ("transformer", []),
    "preln": ("transformer", ["--encoder-normalize-before", "--decoder-normalize-before"]),
    "rescale": ("rescale_transformer", []),
    "rescale_c1": ("rescale_transformer", ["--rescale-c", "1"]),
    "rescale_mlr3": ("rescale_transformer", ["--rescale-multiplier-lr", "3"]),
    "rescale_mlr10": ("rescale_transformer", ["--rescale-multiplier-lr", "10"]),
    "rescale_vector": ("rescale_transformer", ["--rescale-multiplier", "vector"]),
    "rescale_warmup50": ("rescale_transformer", ["--warmup-updates", "50"]),
    "rescale_lr2e-3": ("rescale_transformer", ["--lr", "2e-3"]),
    "postln_lr2e-3": ("transformer", ["--lr", "2e-3"]),
    # the "transformer_iwslt_de_en settings otherwise": FFN 1024
    "postln_ffn1024": ("transformer", ["--encoder-ffn-embed-dim", "1024", "--decoder-ffn-embed-dim", "1024"]),
    "rescale_ffn1024": ("rescale_transformer", ["--encoder-ffn-embed-dim", "1024", "--decoder-ffn-embed-dim", "1024"]),
    # tied decoder input/output embeddings, as --share-all-embeddings in the real-text table
    "postln_tied": ("transformer", ["--share-decoder-input-output-embed"]),
    "rescale_tied": ("rescale_transformer", ["--share-decoder-input-output-embed"]),
    "rescale_tied_c1": ("rescale_transformer", ["--share-decoder-input-output-embed", "--rescale-c", "1"]),
}


# ---------------------------------------------------------------- probe

def build(arch: str, d, extra=(), model=None):
    """A fairseq model as fairseq-train builds it; ``model``: size arguments (default ``MODEL``)."""
    from fairseq import options, utils
    from fairseq.models import ARCH_MODEL_REGISTRY

    utils.import_user_module(argparse.Namespace(user_dir=toy_task.PLUGIN_DIR))
    args = options.parse_args_and_arch(
        options.get_training_parser(),
        ["unused", "--user-dir", toy_task.PLUGIN_DIR, "--arch", arch, "--dropout", "0",
         "--share-all-embeddings", *(MODEL if model is None else model), *extra])
    task = types.SimpleNamespace(source_dictionary=d, target_dictionary=d)
    return ARCH_MODEL_REGISTRY[arch].build_model(args, task)


def toy_batches(d, lexicon, n: int, bsz: int, seed: int):
    rng = random.Random(seed)
    for _ in range(n):
        pairs = [toy_task.make_pair(rng, lexicon, 3, 8) for _ in range(bsz)]
        length = max(len(s.split()) for s, _ in pairs) + 1
        src = torch.full((bsz, length), d.pad())
        tgt = torch.full((bsz, length), d.pad())
        prev = torch.full((bsz, length), d.pad())
        for i, (s, t) in enumerate(pairs):
            s_ids = [d.index(w) for w in s.split()] + [d.eos()]
            t_ids = [d.index(w) for w in t.split()] + [d.eos()]
            src[i, length - len(s_ids):] = torch.tensor(s_ids)  # fairseq pads sources on the left
            tgt[i, :len(t_ids)] = torch.tensor(t_ids)
            prev[i, :len(t_ids)] = torch.tensor([d.eos()] + t_ids[:-1])
        yield src, src.ne(d.pad()).sum(1), prev, tgt


class Probe:
    """Forward hooks on every layer and attention of a fairseq Transformer."""

    def __init__(self, model):
        self.stats: Dict[str, Dict[str, float]] = {}
        self.handles = []
        for stack in ("encoder", "decoder"):
            for i, layer in enumerate(getattr(model, stack).layers):
                name = f"{stack[:3]}{i}"
                self.handles.append(layer.register_forward_hook(self._layer_hook(name)))
                for attn_name in ("self_attn", "encoder_attn"):
                    attn = getattr(layer, attn_name, None)
                    if attn is not None:
                        self.handles.append(attn.register_forward_pre_hook(
                            self._attn_hook(f"{name}.{attn_name.split('_')[0]}"), with_kwargs=True))

    def _layer_hook(self, name):
        def hook(module, inputs, output):
            x = output[0] if isinstance(output, tuple) else output
            stats = self.stats.setdefault(name, {})
            stats["rms"] = x.detach().float().pow(2).mean().sqrt().item()
            stats["max"] = x.detach().abs().max().float().item()
            stats["dtype"] = str(x.dtype).replace("torch.", "")
            if x.requires_grad:
                x.register_hook(lambda g: self.stats[name].__setitem__("grad_rms", g.pow(2).mean().sqrt().item()))
        return hook

    def _attn_hook(self, name):
        def hook(module, args, kwargs):
            query = kwargs.get("query", args[0] if args else None)
            key = kwargs.get("key", args[1] if len(args) > 1 else None)
            mask = kwargs.get("key_padding_mask")
            with torch.no_grad():
                tq, b, _ = query.shape
                h, dh = module.num_heads, module.head_dim
                q = (module.q_proj(query) * module.scaling).view(tq, b, h, dh)
                k = module.k_proj(key).view(key.shape[0], b, h, dh)
                logits = torch.einsum("tbhd,sbhd->bhts", q, k)
                if kwargs.get("attn_mask") is not None:
                    logits = logits + kwargs["attn_mask"].view(1, 1, *kwargs["attn_mask"].shape)
                if mask is not None:
                    logits = logits.masked_fill(mask.view(b, 1, 1, -1), float("-inf"))
                p = logits.softmax(-1)
                finite = torch.isfinite(logits)
                n_keys = finite.sum(-1).clamp(min=2).float()
                ent = -(p * p.clamp(min=1e-12).log()).sum(-1) / n_keys.log()
                self.stats[name] = {"logit_std": logits[finite].std().item(), "entropy": ent.mean().item()}
        return hook


class DyTSaturation:
    """Forward hooks on every DyT (``gamma * tanh(alpha * x) + beta``) of a model: the RMS
    and max |x| of its input and the share of entries where tanh is saturated. A DyT
    whose input grew past ~2 / alpha passes on sign(x) and almost no gradient."""

    SATURATED = 2.0

    def __init__(self, model):
        self.stats: Dict[str, Dict] = {}
        for name, module in model.named_modules():
            if type(module).__name__ == "DynamicTanh":
                module.register_forward_hook(self._hook(name))

    def _hook(self, name):
        def hook(module, inputs, output):
            x = inputs[0].detach().float()
            alpha = module.alpha.detach().float()
            s = self.stats.setdefault(name, {"alpha": alpha.mean().item(), "rms": [], "max": [], "saturated": []})
            s["rms"].append(x.pow(2).mean().sqrt().item())
            s["max"].append(x.abs().max().item())
            s["saturated"].append((alpha * x).abs().gt(self.SATURATED).float().mean().item())
        return hook


def probe(args) -> None:
    from fairseq.data import Dictionary

    torch.set_num_threads(1)
    lexicon = toy_task.make_lexicon(args.vocab)
    d = Dictionary()
    for w in sorted(lexicon) + sorted(lexicon.values()):
        d.add_symbol(w)
    record = {}
    for name in args.models:
        arch, extra = VARIANTS[name]
        torch.manual_seed(1)
        model = build(arch, d, extra)
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.98))
        p = Probe(model)
        rows = []
        for step, (src, lengths, prev, tgt) in enumerate(toy_batches(d, lexicon, args.steps + 1, 200, seed=1)):
            # fairseq's inverse_sqrt with warm-up from 1e-7
            lr = args.lr * min((step + 1) / args.warmup, math.sqrt(args.warmup / (step + 1)))
            for g in opt.param_groups:
                g["lr"] = lr
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                logits = model(src, lengths, prev)[0]
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), tgt.view(-1), ignore_index=d.pad(),
                                   label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            if step in args.at:
                row = {"step": step, "loss": loss.item(), **{k: dict(v) for k, v in p.stats.items()}}
                if name.startswith("rescale"):
                    row["multipliers"] = [round(m._scale.mean().item(), 3) for m in model.modules()
                                          if type(m).__name__ == "RescaledResidual" and m._scale is not None]
                rows.append(row)
            opt.step()
        record[name] = rows
        print(f"\n### {name} ({arch} {' '.join(extra)})\n")
        layers = [k for k in rows[0] if k[:3] in ("enc", "dec") and "." not in k]
        print(table(["step", "loss"] + [f"{k} rms/grad" for k in layers],
                    [[r["step"], f"{r['loss']:.3f}"] + [f"{r[k]['rms']:.2f}/{r[k].get('grad_rms', 0):.1e}"
                                                       for k in layers] for r in rows]))
        attns = [k for k in rows[0] if "." in k]
        print()
        print(table(["step"] + [f"{k} logit sd / entropy" for k in attns],
                    [[r["step"]] + [f"{r[k]['logit_std']:.2f} / {r[k]['entropy']:.2f}" for k in attns]
                     for r in rows]))
        print()
        print(table(["step"] + [f"{k} max |x|" for k in layers],
                    [[r["step"]] + [f"{r[k]['max']:.1f}" for k in layers] for r in rows]))
        print(f"(layer outputs in {rows[-1][layers[0]]['dtype']})")
        if "multipliers" in rows[-1]:
            print("\nmultipliers m_k at the last step (encoder sublayers, then decoder):", rows[-1]["multipliers"])
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, f"probe_v{args.vocab}{'_bf16' if args.bf16 else ''}.json")
    with open(path, "w") as f:
        json.dump(record, f, indent=1)
    print(f"\nwrote {os.path.relpath(path, ROOT)}")


# ---------------------------------------------------------------- a trained checkpoint

def at_init(args) -> None:
    """The forward pass at init (no update, seed 1) of each method of the real-text
    table at ``--layers``, on the first valid pairs of ``--data``: the spread of the
    output logits and the loss. A model whose first forward already gives a loss in the
    thousands diverges whatever its lr (no-LN at 18+18: NaN by update 20 even at 1e-3)."""
    from fairseq.data import Dictionary, LanguagePairDataset, data_utils

    torch.set_num_threads(1)
    data_bin = os.path.join(args.data, "data-bin")
    d = Dictionary.load(os.path.join(data_bin, f"dict.{args.lang}.txt"))  # joint: the same for both sides
    src_set, tgt_set = (data_utils.load_indexed_dataset(os.path.join(data_bin, f"valid.en-{args.lang}.{side}"), d)
                        for side in ("en", args.lang))
    pairs = LanguagePairDataset(src_set, src_set.sizes, d, tgt_set, tgt_set.sizes, d)
    # fairseq's own batch of the first --sentences pairs (sources padded on the left)
    batch = pairs.collater([pairs[i] for i in range(min(args.sentences, len(pairs)))])
    src, lengths, prev = (batch["net_input"][k] for k in ("src_tokens", "src_lengths", "prev_output_tokens"))
    tgt = batch["target"]
    cfg = Config(layers=args.layers)
    rows = []
    for m in args.methods:
        _label, arch, extra = METHODS[m]
        torch.manual_seed(1)
        model = build(arch, d, extra, model=cfg.model_args()).eval()
        with torch.no_grad():
            logits, _ = model(src, lengths, prev)
        mask = tgt.ne(d.pad())
        nll = -logits.float().log_softmax(-1).gather(-1, tgt.unsqueeze(-1)).squeeze(-1)[mask].mean().item()
        rows.append([m, f"{logits[mask].float().std().item():.2f}", f"{nll / math.log(2):.2f}"])
    print(f"\nAt init, {args.layers}+{args.layers} layers, {cfg.dim}-d, first {len(tgt)} valid pairs of {args.data} "
          f"(uniform guess: {math.log2(len(d)):.2f} bits; rescale_transformer before its AddBias calibration)\n")
    print(table(["method", "logit sd", "nll (bits per token)"], rows))


def trained(args) -> None:
    """Per-layer output RMS and max |x| on the valid split, attention entropies and the
    learnt multipliers of a fairseq-train checkpoint (issue 14, items 3 and 4)."""
    from fairseq import checkpoint_utils, utils

    torch.set_num_threads(1)
    utils.import_user_module(argparse.Namespace(user_dir=toy_task.PLUGIN_DIR))
    for path in (args.checkpoint, os.path.join(args.data_bin, "dict." + args.dict_lang + ".txt")):
        if not os.path.exists(path):
            raise SystemExit(f"error: {path} not found")
    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task(
        [args.checkpoint], arg_overrides={"data": args.data_bin})
    model = models[0].eval()
    task.load_dataset(args.subset)
    batches = task.get_batch_iterator(task.dataset(args.subset), max_tokens=2048, seed=1).next_epoch_itr(shuffle=False)
    p = Probe(model)
    agg: Dict[str, Dict[str, List[float]]] = {}
    dyt = DyTSaturation(model)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
        for i, sample in enumerate(batches):
            if i == args.batches:
                break
            model(**sample["net_input"])
            for k, v in p.stats.items():
                for stat, value in v.items():
                    if isinstance(value, float):
                        agg.setdefault(k, {}).setdefault(stat, []).append(value)
    layers = [k for k in agg if "." not in k]
    rows = [[k, f"{statistics.mean(agg[k]['rms']):.3f}", f"{max(agg[k]['max']):.1f}"] for k in layers]
    print(f"\n{args.checkpoint} ({cfg.model.arch}), {args.subset}, {args.batches} batches"
          f"{', bf16 autocast' if args.bf16 else ''}\n")
    print(table(["layer output", "RMS", "max |x|"], rows))
    attns = [k for k in agg if "." in k]
    print()
    print(table(["attention", "logit sd", "entropy"],
                [[k, f"{statistics.mean(agg[k]['logit_std']):.2f}", f"{statistics.mean(agg[k]['entropy']):.2f}"]
                 for k in attns]))
    rows = []
    for stack in ("encoder", "decoder"):
        for i, layer in enumerate(getattr(model, stack).layers):
            for name in ("self_attn_residual", "encoder_attn_residual", "ffn_residual"):
                r = getattr(layer, name, None)
                if r is not None:
                    weight = r.branch_weight().mean().item()  # m_k / sqrt(L)
                    rows.append([f"{stack[:3]}{i}.{name[:-9]}", f"{r.shortcut_scale:.3f}",
                                 f"{weight * math.sqrt(layer.num_sublayers):.3f}", f"{weight:.3f}"])
    if rows:
        print()
        print(table(["sublayer", "alpha_k", "learnt m_k (mean over channels)", "branch factor m_k / sqrt(L)"], rows))
    if dyt.stats:
        print(f"\nDyT inputs (saturated: |alpha x| > {DyTSaturation.SATURATED}, where tanh' < 0.07)\n")
        print(table(["DyT", "alpha", "input RMS", "max |x|", "saturated"],
                    [[name, f"{s['alpha']:.3f}", f"{statistics.mean(s['rms']):.2f}", f"{max(s['max']):.1f}",
                      f"{statistics.mean(s['saturated']):.2f}"] for name, s in dyt.stats.items()]))


# ---------------------------------------------------------------- variants

def variants(args) -> None:
    out = os.path.join(OUT, f"toy_v{args.vocab}")
    data_bin = os.path.join(out, "data-bin")
    if not os.path.exists(os.path.join(data_bin, "dict.src.txt")):
        toy_task.write_corpus(os.path.join(out, "text"), vocab_size=args.vocab)
        toy_task.preprocess(os.path.join(out, "text"), data_bin)
    results = {}
    for name in args.variants:
        arch, extra = VARIANTS[name]
        for seed in args.seeds:
            path = os.path.join(out, f"{name}_s{seed}.json")
            if not os.path.exists(path):
                save = os.path.join(out, "ckpt", f"{name}_s{seed}")
                print(f"{name} seed {seed}: training", flush=True)
                log = toy_task.train(data_bin, save, arch, args.updates, extra=MODEL + RECIPE + extra, seed=seed)
                gen = toy_task.generate(data_bin, os.path.join(save, "checkpoint_last.pt"))
                valid = [float(v) for v in re.findall(r"valid on 'valid' subset \| loss ([0-9.]+)", log)]
                with open(path, "w") as f:
                    json.dump({"variant": name, "arch": arch, "extra": extra, "seed": seed,
                               "bleu": toy_task.parse_bleu(gen), "valid_loss": valid[-1]}, f)
            with open(path) as f:
                results.setdefault(name, []).append(json.load(f))
    rows = []
    for name, rs in results.items():
        bleus = [r["bleu"] for r in rs]
        rows.append([name, " ".join(VARIANTS[name][1]) or "-", ", ".join(f"{b:.1f}" for b in bleus),
                     f"{statistics.mean(bleus):.1f}", f"{statistics.mean(r['valid_loss'] for r in rs):.3f}"])
    print(table(["variant", "change", "BLEU per seed", "mean BLEU", "mean valid loss"], rows))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="part", required=True)
    a = sub.add_parser("probe", help="per-layer signal/gradient scales and attention entropy over the first updates")
    a.add_argument("--models", nargs="+", default=["postln", "rescale"], choices=list(VARIANTS))
    a.add_argument("--steps", type=int, default=300)
    a.add_argument("--at", type=int, nargs="+", default=[0, 25, 50, 100, 200, 300])
    a.add_argument("--lr", type=float, default=1e-3)
    a.add_argument("--warmup", type=int, default=100)
    a.add_argument("--vocab", type=int, default=40)
    a.add_argument("--bf16", action="store_true",
                   help="train under torch.autocast(cpu, bfloat16) (fairseq-train --bf16 fails on a CPU: "
                        "its trainer takes bf16 without CUDA for a TPU run); also logs max |activation|")
    b = sub.add_parser("variants", help="fairseq-train runs of one change at a time")
    b.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    b.add_argument("--seeds", type=int, nargs="+", default=[1])
    b.add_argument("--updates", type=int, default=300)
    b.add_argument("--vocab", type=int, default=40)
    c = sub.add_parser("trained", help="per-layer scales, learnt multipliers and DyT saturation of a checkpoint")
    c.add_argument("checkpoint")
    c.add_argument("--data-bin", required=True, help="the data-bin the checkpoint was trained on")
    c.add_argument("--dict-lang", default="de", help="a language of --data-bin (to check the path)")
    c.add_argument("--subset", default="valid")
    c.add_argument("--batches", type=int, default=10)
    c.add_argument("--bf16", action="store_true", help="run the forward under bf16 autocast")
    e = sub.add_parser("init", help="logit spread and loss at init of the real-text methods at a depth")
    e.add_argument("--data", default=os.path.join("data", "gettext_en_de"),
                   help="folder made by projects.translation.prepare_gettext")
    e.add_argument("--lang", default="de")
    e.add_argument("--layers", type=int, default=18)
    e.add_argument("--methods", nargs="+", default=["postln", "preln", "dyt", "noln", "rescale"], choices=list(METHODS))
    e.add_argument("--sentences", type=int, default=64)
    args = p.parse_args(argv)
    if args.part == "init":
        valid = os.path.join(args.data, "data-bin", f"valid.en-{args.lang}.{args.lang}.bin")
        if not os.path.exists(valid):
            p.error(f"{valid} not found: --data must be a folder made by python -m projects.translation.prepare_gettext")
    {"probe": probe, "variants": variants, "trained": trained, "init": at_init}[args.part](args)


if __name__ == "__main__":
    main()
