"""Peak memory of reading masks from files, against the bytes of the masks themselves.

    python benchmarks/bench_loading.py [--quick]

VGG-19 (CIFAR-100) at compression 100 written five ways: a compressed and an uncompressed ``.npz``
of boolean masks, a ``.safetensors`` of ``uint8`` masks and one of ``float32`` weights (the mask is
``weight != 0``), and, when torch is installed (never a dependency), a PyTorch state dict of
``float32`` weights. For each file, ``tracemalloc``'s peak (NumPy reports its buffers to it) during

  load        ``load_masks(path, arch)``
  effective   ``effective_masks(arch, masks)`` on the loaded masks

divided by ``mask bytes``, the bytes of the boolean masks that ``load_masks`` returns: 1.00 is
the least any loader can hold. A loader that reads layer by layer holds, besides the masks, one
layer's raw entry at a time. Goals (the script exits 1 when one is missed, except with
``--quick``, a smoke run on LeNet-5 that CI runs):

  load        peak <= mask bytes + the largest raw entry (its dtype's bytes) + 5 %
  effective   peak <= 1.05 x mask bytes (the effective masks it returns, nothing else)

Times are the minimum of 3 reads, for orientation only.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import tracemalloc

import numpy as np

import connsim
from connsim.maskio import load_masks

SLACK = 1.05


def peak(fn):
    tracemalloc.start()
    try:
        out = fn()
        return tracemalloc.get_traced_memory()[1], out
    finally:
        tracemalloc.stop()


def files(folder, arch, masks, rng):
    """(label, path, bytes per element of the raw entries) of every format written."""
    out = []
    path = os.path.join(folder, "masks.npz")
    connsim.save_masks(path, masks)
    out.append(("npz compressed, bool", path, 1))
    path = os.path.join(folder, "plain.npz")
    np.savez(path, **masks)
    out.append(("npz uncompressed, bool", path, 1))
    try:
        from safetensors.numpy import save_file
    except ImportError:
        print("safetensors not installed: its files are skipped")
    else:
        path = os.path.join(folder, "masks.safetensors")
        save_file({k: m.astype(np.uint8) for k, m in masks.items()}, path)
        out.append(("safetensors, uint8 masks", path, 1))
        weights = {f"{k}.weight": (rng.standard_normal(m.shape, dtype=np.float32) * m)
                   for k, m in masks.items()}
        path = os.path.join(folder, "weights.safetensors")
        save_file(weights, path)
        out.append(("safetensors, float32 weights", path, 4))
    try:
        import torch
    except ImportError:
        print("torch not installed: the PyTorch state dict is skipped")
    else:
        path = os.path.join(folder, "state.pt")
        torch.save({f"{k}.weight": torch.from_numpy(rng.standard_normal(m.shape, dtype=np.float32)
                                                    * m) for k, m in masks.items()}, path)
        out.append(("PyTorch state dict, float32", path, 4))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="LeNet-5, never fail")
    args = ap.parse_args()
    name = "lenet-5" if args.quick else "vgg-19"
    arch = connsim.get_arch(name, **({} if args.quick else {"classes": 100}))
    rng = np.random.default_rng(0)
    masks = connsim.random_masks(arch, connsim.quota(arch, "uniform", 0.01), rng=0)
    mask_bytes = sum(m.nbytes for m in masks.values())
    largest = max(m.size for m in masks.values())
    print(f"{name}: {len(masks)} layers, mask bytes {mask_bytes / 2**20:.1f} MiB, largest layer "
          f"{largest / 2**20:.2f} M entries")
    missed = []
    with tempfile.TemporaryDirectory() as folder:
        for label, path, item in files(folder, arch, masks, rng):
            times = []
            for _ in range(3):  # the first read also imports the readers
                t = time.perf_counter()
                load_masks(path, arch)
                times.append(time.perf_counter() - t)
            p_load, loaded = peak(lambda p=path: load_masks(p, arch))
            assert all((loaded[k] == masks[k]).all() for k in masks), label
            connsim.effective_masks(arch, loaded)  # imports and loads the compiled kernels
            p_eff, _ = peak(lambda m=loaded: connsim.effective_masks(arch, m))
            goal_load = SLACK * (mask_bytes + item * largest) / mask_bytes
            print(f"  {label:<30} load {p_load / mask_bytes:5.2f}x mask bytes (goal <= "
                  f"{goal_load:.2f})  effective {p_eff / mask_bytes:5.2f}x (goal <= {SLACK:.2f})"
                  f"  load time {min(times) * 1e3:7.1f} ms")
            if p_load / mask_bytes > goal_load:
                missed.append(f"{label}: load peaks at {p_load / mask_bytes:.2f}x mask bytes")
            if p_eff / mask_bytes > SLACK:
                missed.append(f"{label}: effective_masks peaks at {p_eff / mask_bytes:.2f}x")
    for m in missed:
        print(f"GOAL MISSED: {m}")
    return 1 if missed and not args.quick else 0


if __name__ == "__main__":
    sys.exit(main())
