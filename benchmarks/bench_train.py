"""Training speed: connsim's NumPy trainer next to PyTorch CPU, same model, batch and threads,
measured in the same run (PyTorch only if installed: pip install torch==2.13.0).

    python benchmarks/bench_train.py [--iterations N] [--threads 1 2]

Seconds per epoch = time per training iteration (forward, backward, SGD step with momentum and
weight decay; median of N after warm-up) x iterations per epoch. Models: LeNet-300-100 on MNIST
(batch 100) and LeNet-5 on 1x28x28 MNIST (batch 128), BatchNorm and ReLU after hidden layers.
For each thread count (BLAS threads through threadpoolctl, ``torch.set_num_threads``):

  dense     connsim and PyTorch on the dense models (goals: LeNet-300-100 <= 1.0x PyTorch,
            LeNet-5 <= 1.3x)
  sparse    LeNet-300-100 with uniform random masks at densities 0.1 ... 0.005: connsim's masked
            dense products (``sparse=False``), its automatic choice (``sparse='auto'``: kept weights
            only below 5 % density) and PyTorch's dense model (goal: at density 0.01, auto <= 0.5x
            connsim's dense epoch)
  conv      VGG-11 on CIFAR-10 shapes (random data, batch 64), uniform random masks at densities
            0.04 and 0.01: seconds per step of the masked dense products and of ``sparse='auto'``
            (its conv and dense layers multiply their kept weights only)
"""

import argparse
import statistics
import time

import numpy as np

import connsim
from connsim.trainer.data import load_mnist
from connsim.trainer.layers import cross_entropy
from connsim.trainer.network import Network
from connsim.trainer.optim import SGD


def time_connsim(arch, masks, x, y, iters, sparse="auto"):
    net = Network(arch, masks, rng=0, sparse=sparse)
    opt = SGD(net, momentum=0.9, weight_decay=1e-3)
    n, bs = len(y), {"lenet-300-100": 100, "lenet-5": 128}[arch.name]
    times = []
    for k in range(iters + 5):
        idx = np.arange(k * bs, (k + 1) * bs) % n
        t = time.perf_counter()
        _, g = cross_entropy(np, net.forward(x[idx]), y[idx])
        net.backward(g)
        opt.step(0.01)
        if k >= 5:
            times.append(time.perf_counter() - t)
    return statistics.median(times), n // bs


def time_steps(arch, masks, batch, iters, sparse):
    """Median seconds per training step on random data (shapes only matter)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, *arch.input_shape)).astype(np.float32)
    y = rng.integers(0, 10, batch)
    net = Network(arch, masks, rng=0, sparse=sparse)
    opt = SGD(net, momentum=0.9, weight_decay=1e-3)
    times = []
    for k in range(iters + 2):
        t = time.perf_counter()
        _, g = cross_entropy(np, net.forward(x), y)
        net.backward(g)
        opt.step(0.01)
        if k >= 2:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def torch_model(torch, arch):
    nn = torch.nn
    mods = []
    for node in arch.nodes[1:]:
        if node.op == "flatten":
            mods.append(nn.Flatten())
        elif node.op == "pool":
            mods.append((nn.AvgPool2d if node.mode == "avg" else nn.MaxPool2d)(node.kernel))
        elif node.op in ("dense", "conv"):
            shape = arch.weight_shape(node)
            if node.op == "dense":
                mods.append(nn.Linear(shape[1], shape[0], bias=node.bias))
            else:
                mods.append(nn.Conv2d(shape[1], shape[0], node.kernel, bias=node.bias))
            if node.batchnorm:
                mods.append((nn.BatchNorm1d if node.op == "dense" else nn.BatchNorm2d)(shape[0]))
            if node.relu:
                mods.append(nn.ReLU())
    return nn.Sequential(*mods)


def time_torch(torch, arch, x, y, iters):
    model = torch_model(torch, arch)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    n, bs = len(y), {"lenet-300-100": 100, "lenet-5": 128}[arch.name]
    times = []
    for k in range(iters + 5):
        idx = torch.arange(k * bs, (k + 1) * bs) % n
        t = time.perf_counter()
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx])
        loss.backward()
        opt.step()
        if k >= 5:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    from threadpoolctl import threadpool_limits

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    try:
        import torch
    except ImportError:
        torch = None
    data = load_mnist()
    x, y = data.x_train, data.y_train
    print(f"torch {torch.__version__ if torch else 'not installed'}; seconds per epoch")
    for threads in args.threads:
        if torch is not None:
            torch.set_num_threads(threads)
        with threadpool_limits(threads):
            print(f"-- {threads} thread(s)")
            for name in ("lenet-300-100", "lenet-5"):
                arch = connsim.get_arch(name, input_shape=(1, 28, 28))
                t, per_epoch = time_connsim(arch, None, x, y, args.iterations)
                line = f"dense  {name:<14} connsim {t * per_epoch:6.2f}"
                if torch is not None:
                    tt = time_torch(torch, arch, x, y, args.iterations)
                    line += f"   PyTorch {tt * per_epoch:6.2f}   connsim/PyTorch {t / tt:4.2f}"
                print(line, flush=True)
            arch = connsim.get_arch("lenet-300-100", input_shape=(1, 28, 28))
            tt = time_torch(torch, arch, x, y, args.iterations) if torch is not None else None
            for d in (0.1, 0.05, 0.03, 0.02, 0.01, 0.005):
                masks = connsim.random_masks(arch, connsim.quota(arch, "uniform", d), rng=0)
                t_dense, per_epoch = time_connsim(arch, masks, x, y, args.iterations, sparse=False)
                t_auto, _ = time_connsim(arch, masks, x, y, args.iterations)
                line = (f"sparse lenet-300-100 d={d:<5} masked dense {t_dense * per_epoch:6.2f}  "
                        f"auto {t_auto * per_epoch:6.2f}  auto/dense {t_auto / t_dense:4.2f}")
                if tt is not None:
                    line += f"   PyTorch dense {tt * per_epoch:6.2f}   auto/PyTorch {t_auto / tt:4.2f}"
                print(line, flush=True)
            arch = connsim.get_arch("vgg-11", classes=10)
            for d in (0.04, 0.01):
                masks = connsim.random_masks(arch, connsim.quota(arch, "uniform", d), rng=0)
                iters = max(3, min(args.iterations, 8))
                t_dense = time_steps(arch, masks, 64, iters, sparse=False)
                t_auto = time_steps(arch, masks, 64, iters, sparse="auto")
                print(f"conv   vgg-11 d={d:<5} s/step: masked dense {t_dense:6.3f}  auto "
                      f"{t_auto:6.3f}  auto/dense {t_auto / t_dense:4.2f}", flush=True)


if __name__ == "__main__":
    main()
