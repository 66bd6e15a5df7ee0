"""rescale_transformer vs fairseq's LayerNorm Transformer: training speed, memory, quality.

1. Speed and memory (in process, same dimensions, same batch, same optimizer):
   training tokens/s of ``rescale_transformer_wmt_en_de`` and
   ``transformer_wmt_en_de`` (6+6 layers, 512-d, shared 32k vocabulary by default),
   measured in alternating rounds in one run so both see the same machine load;
   the ratio is printed (target >= 1.05x). A third model bounds what any
   LayerNorm-free variant can gain: ``transformer_wmt_en_de`` with its LayerNorms
   skipped (identity), i.e. the same matrix products, attention, dropout and
   residual adds and nothing else. Its ratio is the *ceiling*: a model without
   LayerNorm still does all of that work, so where the ceiling is below 1.05x no
   implementation reaches the target on that machine at that batch. Memory: bytes
   of activations saved for the backward pass per step (deterministic; the part
   LayerNorm adds to), the peak CUDA memory on a GPU, and parameter counts.
2. Quality: BLEU on the generated reversal task (``projects/translation/toy_task.py``)
   after the same number of updates, for ``rescale_transformer`` and ``transformer``
   with the same tiny dimensions, through the real fairseq CLIs.

    .venv/bin/python benchmarks/bench_translation.py                 # both parts
    .venv/bin/python benchmarks/bench_translation.py --skip-quality  # speed and memory only
    .venv/bin/python benchmarks/bench_translation.py --variance      # per-sublayer variance at init

(``docs/results.md`` lists the exact commands behind its numbers.)
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from projects.translation import toy_task  # noqa: E402


def build(arch: str, vocab: int, device: torch.device, extra=()):
    from fairseq import options, utils
    from fairseq.data import Dictionary
    from fairseq.models import ARCH_MODEL_REGISTRY

    utils.import_user_module(argparse.Namespace(user_dir=toy_task.PLUGIN_DIR))
    args = options.parse_args_and_arch(
        options.get_training_parser(),
        ["unused", "--user-dir", toy_task.PLUGIN_DIR, "--arch", arch, "--share-all-embeddings", *extra],
    )
    d = Dictionary()
    for i in range(vocab - d.nspecial):
        d.add_symbol(f"w{i}")
    task = types.SimpleNamespace(source_dictionary=d, target_dictionary=d)
    return ARCH_MODEL_REGISTRY[arch].build_model(args, task).to(device), d


def make_batch(d, bsz: int, length: int, gen: torch.Generator, device):
    src = torch.randint(d.nspecial, len(d), (bsz, length), generator=gen).to(device)
    tgt = torch.randint(d.nspecial, len(d), (bsz, length), generator=gen).to(device)
    prev = torch.cat([torch.full((bsz, 1), d.eos(), device=device), tgt[:, :-1]], 1)
    lengths = torch.full((bsz,), length, device=device)
    return src, lengths, prev, tgt


def skip_layer_norms(model: torch.nn.Module) -> int:
    """Replace every LayerNorm in ``model`` by the identity (the speed ceiling of a
    LayerNorm-free model of the same dimensions; such a model is not meant to be
    trained). Returns the number replaced."""
    from rescalenet.fold import _replace

    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.LayerNorm)]
    for name in names:
        _replace(model, name, torch.nn.Identity())
    return len(names)


def train_step(model, opt, batch, amp: bool):
    src, lengths, prev, tgt = batch
    with torch.autocast(device_type=src.device.type, dtype=torch.bfloat16, enabled=amp):
        logits = model(src, lengths, prev)[0]
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), tgt.view(-1), label_smoothing=0.1)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss


def saved_activation_bytes(model, opt, batch, amp: bool) -> int:
    """Bytes of the tensors autograd keeps for the backward pass of one step
    (parameters excluded, each storage counted once)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            seen[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        train_step(model, opt, batch, amp)
    return sum(seen.values())


RESCALE, LAYERNORM, CEILING = "rescale_transformer_wmt_en_de", "transformer_wmt_en_de", "no-LayerNorm ceiling"


def bench_speed(args):
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    amp = device.type == "cuda"
    torch.set_num_threads(args.threads)
    variants = {RESCALE: RESCALE, LAYERNORM: LAYERNORM, CEILING: LAYERNORM}
    extra = ["--dropout", "0.1"]
    runs = {}
    for name, arch in variants.items():
        torch.manual_seed(0)
        model, d = build(arch, args.vocab, device, extra)
        if name == CEILING and skip_layer_norms(model) == 0:
            raise RuntimeError(f"{arch} holds no torch.nn.LayerNorm to skip (fused LayerNorm installed?)")
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.98))
        gen = torch.Generator().manual_seed(0)
        batches = [make_batch(d, args.batch, args.length, gen, device) for _ in range(4)]
        for i in range(args.warmup):  # includes the 8 AddBias calibration steps
            train_step(model, opt, batches[i % len(batches)], amp)
        runs[name] = dict(model=model, opt=opt, batches=batches, tps=[], finite=True,
                          params=sum(p.numel() for p in model.parameters()))
        print(f"built {name}: {runs[name]['params'] / 1e6:.1f} M parameters, {args.warmup} warm-up steps",
              flush=True)
    tokens = args.batch * args.length * args.steps
    names = list(runs)
    for r in range(args.repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            run = runs[name]
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for i in range(args.steps):
                loss = train_step(run["model"], run["opt"], run["batches"][i % len(run["batches"])], amp)
            if device.type == "cuda":
                torch.cuda.synchronize()
            run["tps"].append(tokens / (time.perf_counter() - t0))
            # a diverged model could run at another speed (NaN arithmetic): say so
            run["finite"] = run["finite"] and bool(torch.isfinite(loss))
        print(f"round {r + 1}/{args.repeats}: " + ", ".join(
            f"{n} {runs[n]['tps'][-1]:.0f} tok/s" for n in names), flush=True)
    for run in runs.values():
        run["saved"] = saved_activation_bytes(run["model"], run["opt"], run["batches"][0], amp)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            train_step(run["model"], run["opt"], run["batches"][0], amp)
            torch.cuda.synchronize()
            run["peak"] = torch.cuda.max_memory_allocated()
    return device, runs


def bench_quality(args):
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        text = toy_task.write_corpus(os.path.join(tmp, "text"))
        data_bin = toy_task.preprocess(text, os.path.join(tmp, "data-bin"))
        for arch in ("rescale_transformer", "transformer"):
            bleus = []
            for seed in range(1, args.quality_seeds + 1):
                save = os.path.join(tmp, f"{arch}-{seed}")
                t0 = time.perf_counter()
                toy_task.train(data_bin, save, arch, max_update=args.quality_updates, seed=seed,
                               threads=args.threads)
                secs = time.perf_counter() - t0
                gen = toy_task.generate(data_bin, os.path.join(save, "checkpoint_last.pt"), threads=args.threads)
                bleus.append((toy_task.parse_bleu(gen), secs))
            out[arch] = bleus
    return out


def variance_profile(layers: int, plain: bool, dim: int = 64, vocab: int = 40):
    """Variance of every residual sum's output at init (eval mode, after the 8
    calibration passes), encoder and decoder; ``plain``: the same network turned
    into a plain ``x + F(x)`` stack (shortcut 1, branch 1, variance-preserving
    branch init: the gains of a one-sublayer stack)."""
    from rescalenet.layers import RescaledResidual
    from rescalenet.transformer import init_attention_branch_, init_feedforward_branch_

    torch.manual_seed(0)
    dims = ["--encoder-layers", str(layers), "--decoder-layers", str(layers), "--dropout", "0",
            "--encoder-embed-dim", str(dim), "--decoder-embed-dim", str(dim),
            "--encoder-ffn-embed-dim", str(2 * dim), "--decoder-ffn-embed-dim", str(2 * dim),
            "--encoder-attention-heads", "4", "--decoder-attention-heads", "4"]
    model, d = build("rescale_transformer", vocab, torch.device("cpu"), dims)
    sums = {"encoder": [], "decoder": []}
    for key, stack in (("encoder", model.encoder), ("decoder", model.decoder)):
        for layer in stack.layers:
            if plain:
                for attn in (layer.self_attn, getattr(layer, "encoder_attn", None)):
                    if attn is not None:
                        init_attention_branch_(attn.v_proj, attn.out_proj, 0, 1)
                init_feedforward_branch_(layer.fc1, layer.fc2, 0, 1)
        for m in stack.modules():
            if isinstance(m, RescaledResidual):
                if plain:
                    m.shortcut_scale, m.residual_scale = 1.0, 1.0
                sums[key].append(m)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _ in range(8):
            src, lengths, prev, _ = make_batch(d, 8, 12, gen, torch.device("cpu"))
            model(src, lengths, prev)
        model.eval()
        out = {k: [] for k in sums}
        hooks = [m.register_forward_hook(lambda mod, i, o, k=k: out[k].append(o.var().item()))
                 for k, ms in sums.items() for m in ms]
        src, lengths, prev, _ = make_batch(d, 32, 12, gen, torch.device("cpu"))
        model(src, lengths, prev)
    for h in hooks:
        h.remove()
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=16, help="sentences per batch (speed part)")
    p.add_argument("--length", type=int, default=32, help="tokens per sentence, source and target")
    p.add_argument("--vocab", type=int, default=32768, help="shared vocabulary size")
    p.add_argument("--steps", type=int, default=2, help="timed training steps per round")
    p.add_argument("--repeats", type=int, default=8, help="timed rounds per model (alternating)")
    p.add_argument("--warmup", type=int, default=9, help="untimed steps first (>= 8: AddBias calibration)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cpu", action="store_true", help="measure on the CPU even if a GPU is present")
    p.add_argument("--quality-updates", type=int, default=200)
    p.add_argument("--quality-seeds", type=int, default=4)
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--skip-quality", action="store_true")
    p.add_argument("--variance", action="store_true", help="print the per-sublayer variance profile and exit")
    args = p.parse_args(argv)

    if args.variance:
        torch.set_num_threads(1)
        print("| layers | residuals | stack | first sublayer | middle | last | max/min |")
        print("|---|---|---|---|---|---|---|")
        for layers in (6, 12):
            for plain in (False, True):
                for stack, v in variance_profile(layers, plain).items():
                    print(f"| {layers}+{layers} | {'plain x+F(x)' if plain else 'rescaled'} | {stack} | "
                          f"{v[0]:.3g} | {v[len(v) // 2]:.3g} | {v[-1]:.3g} | {max(v) / min(v):.3g} |")
        return

    if not args.skip_speed:
        device, runs = bench_speed(args)
        name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {args.threads} threads"
        print(f"\n## Training speed and memory ({name}; batch {args.batch} x {args.length} tokens, "
              f"vocab {args.vocab}, {args.repeats} rounds of {args.steps} steps, median)\n")
        print("| arch | params | target tokens/s (median) | min..max | saved activations / step |"
              + (" peak CUDA memory |" if device.type == "cuda" else ""))
        print("|---|---|---|---|---|" + ("---|" if device.type == "cuda" else ""))
        for name, run in runs.items():
            label = f"{LAYERNORM}, LayerNorms skipped (ceiling)" if name == CEILING else name
            row = (f"| {label} | {run['params'] / 1e6:.1f} M | {statistics.median(run['tps']):.0f} | "
                   f"{min(run['tps']):.0f}..{max(run['tps']):.0f} | {run['saved'] / 2**20:.1f} MiB |")
            if device.type == "cuda":
                row += f" {run['peak'] / 2**20:.0f} MiB |"
            print(row)
        median = {name: statistics.median(run["tps"]) for name, run in runs.items()}
        ratio = median[RESCALE] / median[LAYERNORM]
        ceiling = median[CEILING] / median[LAYERNORM]
        print(f"\nspeed ratio rescale / layernorm: {ratio:.3f}x (target >= 1.05x: "
              f"{'met' if ratio >= 1.05 else 'NOT met'}); saved-activation ratio "
              f"{runs[RESCALE]['saved'] / runs[LAYERNORM]['saved']:.3f}")
        print(f"ceiling (LayerNorm skipped) / layernorm: {ceiling:.3f}x: the most any model without "
              f"LayerNorm can gain at these dimensions and this batch on this machine")
        for name, run in runs.items():
            if not run["finite"]:
                print(f"warning: {name} had a non-finite loss in a timed round; its speed may not be representative")
    if not args.skip_quality:
        res = bench_quality(args)
        print(f"\n## Quality on the generated reversal task ({args.quality_updates} updates, tiny model "
              f"2+2 layers, 64-d; beam 4; fairseq-generate BLEU on 200 test sentences)\n")
        print("| arch | seed | BLEU | train time (s) |")
        print("|---|---|---|---|")
        for arch, rows in res.items():
            for seed, (bleu, secs) in enumerate(rows, 1):
                print(f"| {arch} | {seed} | {bleu:.2f} | {secs:.0f} |")
        for arch, rows in res.items():
            print(f"{arch}: mean BLEU {statistics.mean(b for b, _ in rows):.2f}")


if __name__ == "__main__":
    main()
