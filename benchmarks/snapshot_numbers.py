"""Numbers a refactoring must not change: save a snapshot of init state_dicts, outputs,
gradients and folded outputs of several RescaleNets at seed 0, and compare two snapshots.

    PYTHONPATH=/path/to/old/checkout python benchmarks/snapshot_numbers.py save /tmp/before.pt
    python benchmarks/snapshot_numbers.py save /tmp/after.pt
    python benchmarks/snapshot_numbers.py compare /tmp/before.pt /tmp/after.pt --exact

Uses only the API every version since session 1 has (``create_model``, ``calibrate``,
``set_fused_forward``, ``fold_for_inference``, the 3D builders, ``rescalenet.timm``).
"""
import argparse

import torch


def calib(m, shape, seed=1):
    import rescalenet

    g = torch.Generator().manual_seed(seed)
    rescalenet.calibrate(m, [torch.randn(*shape, generator=g) for _ in range(8)])


def save(path):
    import rescalenet

    torch.set_num_threads(2)
    out = {}
    names2d = ["rescalenet18", "rescalenet34", "rescalenet50", "rescalenext50_32x4d"]
    for name in names2d:
        for kw in [dict(), dict(multiplier="vector", drop_conv=0.03, drop_fc=0.3), dict(multiplier="none", c=3)]:
            torch.manual_seed(0)
            m = rescalenet.create_model(name, num_classes=10, **kw)
            key = name + str(sorted(kw.items()))
            r = {"init": {k: v.clone() for k, v in m.state_dict().items()}}
            calib(m, (2, 3, 48, 48))
            x = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(2))
            m.eval(); r["eval"] = m(x).detach()
            m.train(); torch.manual_seed(5); y = m(x); y.square().sum().backward()
            r["train"] = y.detach(); r["grad"] = {n: p.grad.clone() for n, p in m.named_parameters()}
            m.set_fused_forward(False); m.eval(); r["eval_ref"] = m(x).detach()
            m.set_fused_forward(True)
            f = rescalenet.fold_for_inference(m); r["fold"] = f(x).detach()
            out[key] = r
    # features
    torch.manual_seed(0)
    m = rescalenet.rescalenet18(out_indices=(0, 1, 2, 3)); calib(m, (2, 3, 64, 64)); m.eval()
    out["feat18"] = [t.detach() for t in m(torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3)))]
    # 3D
    for b in ["slowonly_rescalenet50", "i3d_rescalenet50"]:
        torch.manual_seed(0)
        m = getattr(rescalenet, b)(num_classes=5)
        r = {"init": {k: v.clone() for k, v in m.state_dict().items()}}
        calib(m, (1, 3, 16, 32, 32)); m.eval()
        r["eval"] = m(torch.randn(1, 3, 16, 32, 32, generator=torch.Generator().manual_seed(2))).detach()
        out[b] = r
    torch.manual_seed(0)
    m = rescalenet.RescaleNet3d(depth=18, num_classes=0, out_indices=(0, 1, 2, 3))
    out["r3d18_init"] = {k: v.clone() for k, v in m.state_dict().items()}
    # timm
    import timm, rescalenet.timm  # noqa
    torch.manual_seed(0)
    m = timm.create_model("rescalenet50", num_classes=7)
    out["timm50_init"] = {k: v.clone() for k, v in m.state_dict().items()}
    torch.manual_seed(0)
    m = timm.create_model("rescalenet18", features_only=True); calib(m, (2, 3, 64, 64)); m.eval()
    out["timm18_feat"] = [t.detach() for t in m(torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3)))]

    torch.save(out, path)
    print(f"saved {len(out)} entries to {path}")


def compare(a_path, b_path, exact):
    a, b = torch.load(a_path, weights_only=True), torch.load(b_path, weights_only=True)
    bad = []

    def cmp(k, x, y):
        if isinstance(x, dict):
            if set(x) != set(y):
                bad.append(f"keys differ at {k}: {sorted(set(x) ^ set(y))[:5]}")
                return
            for kk in x:
                cmp(k + "/" + kk, x[kk], y[kk])
        elif isinstance(x, list):
            for i, (u, v) in enumerate(zip(x, y)):
                cmp(f"{k}[{i}]", u, v)
        else:
            same = torch.equal(x, y) if exact else torch.allclose(x.double(), y.double(), rtol=1e-5, atol=1e-6)
            if not same:
                bad.append(f"{k}: max abs difference {(x.double() - y.double()).abs().max().item():.3g}")

    for k in a:
        if k not in b:
            bad.append(f"missing {k}")
        else:
            cmp(k, a[k], b[k])
    print("\n".join(bad) or "no difference")
    print(f"{len(bad)} difference(s) ({'exact' if exact else 'rtol 1e-5, atol 1e-6'})")
    return len(bad)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("save")
    s.add_argument("path")
    c = sub.add_parser("compare")
    c.add_argument("a")
    c.add_argument("b")
    c.add_argument("--exact", action="store_true")
    args = p.parse_args()
    if args.cmd == "save":
        save(args.path)
    else:
        raise SystemExit(1 if compare(args.a, args.b, args.exact) else 0)


if __name__ == "__main__":
    main()
