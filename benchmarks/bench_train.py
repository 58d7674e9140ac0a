"""Training speed: connsim's NumPy trainer next to PyTorch CPU, same model, batch and threads,
measured in the same run (PyTorch only if installed: pip install torch==2.13.0).

    python benchmarks/bench_train.py [--iterations N]

Seconds per epoch = time per training iteration (forward, backward, SGD step with momentum and
weight decay; median of N after warm-up) x iterations per epoch. Models: LeNet-300-100 on MNIST
(batch 100) and LeNet-5 on 1x28x28 MNIST (batch 128), BatchNorm and ReLU after hidden layers;
dense and 99 %-sparse masks (connsim multiplies masks in; PyTorch runs the dense model).
"""

import argparse
import os
import statistics
import time

import numpy as np

import connsim
from connsim.trainer.data import load_mnist
from connsim.trainer.layers import cross_entropy
from connsim.trainer.network import Network
from connsim.trainer.optim import SGD


def time_connsim(arch, masks, x, y, iters):
    net = Network(arch, masks, rng=0)
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
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iterations", type=int, default=200)
    args = ap.parse_args()
    try:
        import torch

        torch.set_num_threads(os.cpu_count())
    except ImportError:
        torch = None
    data = load_mnist()
    print(f"threads {os.cpu_count()}, torch {torch.__version__ if torch else 'not installed'}")
    for name in ("lenet-300-100", "lenet-5"):
        arch = connsim.get_arch(name, input_shape=(1, 28, 28))
        x, y = data.x_train, data.y_train
        dense_t, per_epoch = time_connsim(arch, None, x, y, args.iterations)
        q = connsim.quota(arch, "uniform", 0.01)
        sparse_t, _ = time_connsim(arch, connsim.random_masks(arch, q, rng=0), x, y,
                                   args.iterations)
        line = (f"{name:<14} connsim dense {dense_t * per_epoch:6.2f} s/epoch, 99 %-sparse "
                f"masks {sparse_t * per_epoch:6.2f} s/epoch")
        if torch is not None:
            tt = time_torch(torch, arch, x, y, args.iterations)
            line += (f"   PyTorch dense {tt * per_epoch:6.2f} s/epoch   ratio connsim/PyTorch "
                     f"{dense_t / tt:4.2f} (dense), {sparse_t / tt:4.2f} (99 %-sparse vs dense)")
        print(line, flush=True)


if __name__ == "__main__":
    main()
