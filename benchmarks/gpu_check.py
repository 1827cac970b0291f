"""GPU smoke check: DIConv on CUDA equals conv2d on grids and the CPU path elsewhere.

Run on a machine with a GPU (no install needed: ``PYTHONPATH=src python benchmarks/gpu_check.py``).
Prints one line per check and exits non-zero if any fails; then run
``dinet bench conv --device cuda`` for the timings.
"""

from __future__ import annotations

import sys

import torch
from torch import nn

import dinet.points as P
from dinet.nn import DIConv


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max()) if a.numel() else 0.0


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device")
        return 1
    dev = torch.device("cuda")
    # cuDNN may use TF32 for the reference convolutions (1e-4 error); compare in full fp32.
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    print(f"device: {torch.cuda.get_device_name(dev)}, torch {torch.__version__}")
    failures = 0
    torch.manual_seed(0)
    for conv in (nn.Conv2d(8, 16, 3, padding=1), nn.Conv2d(8, 16, 3, stride=2, padding=1),
                 nn.Conv2d(8, 8, 5, padding="same", dilation=2, groups=8),
                 nn.Conv3d(4, 6, 3, stride=2, padding=1)):
        shape = (24, 40) if isinstance(conv, nn.Conv2d) else (12, 10, 8)
        conv = conv.to(dev)
        layer, out_points = DIConv.from_conv(conv, shape)
        grid = P.grid(shape)
        x = torch.randn(2, conv.in_channels, *shape, device=dev, requires_grad=True)
        ref = conv(x)
        values = P.image_to_values(x.detach(), grid).requires_grad_(True)
        out = P.values_to_image(layer(values, grid, out_points), out_points)
        ref.sum().backward()
        out.sum().backward()
        errs = (rel(out, ref), rel(P.values_to_image(values.grad, grid), x.grad),
                rel(layer.weight.grad, conv.weight.grad))
        ok = max(errs) <= 1e-5
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} from_conv {conv}: out/grad_x/grad_w rel err "
              + " / ".join(f"{e:.1e}" for e in errs))

    pin, pout = P.sobol(4096, 2, seed=0), P.random(1000, 2, seed=1)
    conv = DIConv(16, 32, 3, spacing=0.05)
    x = torch.randn(4, 4096, 16, requires_grad=True)
    cpu = conv(x, pin, pout)
    cpu.sum().backward()
    grads = x.grad.clone(), conv.weight.grad.clone()
    conv.zero_grad(set_to_none=True)
    conv = conv.to(dev)
    xg = x.detach().to(dev).requires_grad_(True)
    gpu = conv(xg, pin.to(dev), pout.to(dev))
    gpu.sum().backward()
    errs = (rel(gpu.cpu(), cpu), rel(xg.grad.cpu(), grads[0]),
            rel(conv.weight.grad.cpu(), grads[1]))
    ok = max(errs) <= 1e-4
    failures += not ok
    print(f"{'ok  ' if ok else 'FAIL'} Sobol->random points, CUDA vs CPU: rel err "
          + " / ".join(f"{e:.1e}" for e in errs))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
