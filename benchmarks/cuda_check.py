"""The CUDA paths of the core, checked against references (run on a GPU machine; the
CPU test suite covers the same behaviour on the CPU).

    python benchmarks/cuda_check.py          # on a GPU machine
    python benchmarks/cuda_check.py --cpu    # the same checks on the CPU (dry run)

* 2D and 3D RescaleNet: the fused forward (AddBias shifts and residual factors folded
  into the convolutions) against the module-by-module reference, outputs and
  gradients, in float32 without TF32 and in bf16 autocast with channels-last;
* ``fold_for_inference`` on CUDA against the eval forward;
* calibration on CUDA gives the same AddBias means as on the CPU.

Prints one line per check with the relative error ||a - b|| / ||b|| and its bound,
and exits non-zero if any check fails.
"""
from __future__ import annotations

import sys

import torch

import rescalenet

FAILED = []
DEV = "cuda"  # ``--cpu``: a dry run of the same checks on the CPU


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def check(name: str, err: float, bound: float) -> None:
    ok = err <= bound and err == err  # NaN never passes
    print(f"{'ok  ' if ok else 'FAIL'} {name}: rel err {err:.2e} (bound {bound:.0e})", flush=True)
    if not ok:
        FAILED.append(name)


def perturb(model: torch.nn.Module, seed: int = 1) -> None:
    """Non-trivial AddBias biases and multipliers, so every folded term matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("_bias"):
                p.copy_(torch.randn(p.shape, generator=g).to(p) * 0.3)
            elif n.endswith("_scale"):
                p.copy_((1 + 0.2 * torch.randn(p.shape, generator=g)).to(p))


def step(model, x, fused: bool, amp: bool):
    model.set_fused_forward(fused)
    model.zero_grad(set_to_none=True)
    with torch.autocast(DEV, dtype=torch.bfloat16, enabled=amp):
        out = model(x)
    w = torch.linspace(-1, 1, out.numel(), device=out.device).view_as(out)
    (out.float() * w).sum().backward()
    return out.detach().float(), torch.cat([p.grad.flatten().float() for p in model.parameters()])


def compare_fused(name: str, model, shape, channels_last_fmt) -> None:
    dev = torch.device(DEV)
    g = torch.Generator().manual_seed(0)
    model = model.to(dev)
    rescalenet.calibrate(model, [(torch.randn(*shape, generator=g) + 0.5).to(dev) for _ in range(8)])
    perturb(model)
    model.train()
    x = torch.randn(*shape, generator=g).to(dev)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    ref_out, ref_grad = step(model, x, fused=False, amp=False)
    out, grad = step(model, x, fused=True, amp=False)
    check(f"{name} fp32 fused forward", rel(out, ref_out), 1e-5)
    check(f"{name} fp32 fused gradients", rel(grad, ref_grad), 1e-3)  # fp32 sums over 50 layers
    model.to(memory_format=channels_last_fmt)
    xc = x.contiguous(memory_format=channels_last_fmt)
    out, grad = step(model, xc, fused=True, amp=True)
    check(f"{name} bf16 channels-last fused forward vs fp32 reference", rel(out, ref_out), 5e-2)
    check(f"{name} bf16 channels-last fused gradients vs fp32 reference", rel(grad, ref_grad), 1e-1)  # bf16: bugs give O(1)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True


def main() -> int:
    global DEV
    if "--cpu" in sys.argv[1:]:
        DEV = "cpu"
    elif not torch.cuda.is_available():
        print("no CUDA device (use --cpu for a dry run on the CPU)")
        return 2
    print(torch.cuda.get_device_name() if DEV == "cuda" else "CPU", "torch", torch.__version__)
    torch.manual_seed(0)
    compare_fused("rescalenet50", rescalenet.rescalenet50(num_classes=10, drop_conv=0.0),
                  (8, 3, 96, 80), torch.channels_last)
    compare_fused("rescalenext50_32x4d vector", rescalenet.rescalenext50_32x4d(num_classes=10, multiplier="vector"),
                  (4, 3, 65, 64), torch.channels_last)
    compare_fused("RescaleNet3d-50 (SlowOnly)", rescalenet.RescaleNet3d(depth=50, num_classes=10),
                  (2, 3, 4, 64, 64), torch.channels_last_3d)

    # fold_for_inference on CUDA
    model = rescalenet.rescalenet50(num_classes=10).to(DEV)
    rescalenet.calibrate(model, [torch.randn(4, 3, 64, 64, device=DEV) + 0.5 for _ in range(8)])
    perturb(model, seed=2)
    model.eval()
    x = torch.randn(4, 3, 64, 64, device=DEV)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    with torch.no_grad():
        model.set_fused_forward(False)
        ref = model(x)
        folded = rescalenet.fold_for_inference(model)
        check("fold_for_inference on CUDA", rel(folded(x), ref), 1e-5)

    # calibration means on CUDA == on the CPU
    torch.manual_seed(3)
    cpu_model = rescalenet.rescalenet18(num_classes=10)
    gpu_model = rescalenet.rescalenet18(num_classes=10)
    gpu_model.load_state_dict(cpu_model.state_dict())
    gpu_model.to(DEV)
    batches = [torch.randn(4, 3, 48, 48) + 0.5 for _ in range(8)]
    with torch.no_grad():
        rescalenet.calibrate(cpu_model, batches)
        rescalenet.calibrate(gpu_model, [b.to(DEV) for b in batches])
    cpu_means = torch.cat([v.flatten() for k, v in cpu_model.state_dict().items() if k.endswith("init_mean")])
    gpu_means = torch.cat([v.flatten().cpu() for k, v in gpu_model.state_dict().items() if k.endswith("init_mean")])
    check("AddBias calibration means CUDA vs CPU", rel(gpu_means, cpu_means), 1e-5)
    print("all CUDA checks passed" if not FAILED else f"FAILED: {FAILED}")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
