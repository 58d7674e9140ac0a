"""Training speed: connsim's NumPy trainer next to PyTorch CPU, same model, batch and threads,
measured in the same run (PyTorch only if installed: pip install torch==2.13.0).

    python benchmarks/bench_train.py [--iterations N] [--threads 1 2]

Seconds per epoch = time per training iteration (forward, backward, SGD step with momentum and
weight decay) x iterations per epoch. The methods compared on a row run in alternating blocks
(``race``): N // 3 timed steps each per round, three rounds, each method's best round median.
Models: LeNet-300-100 on MNIST (batch 100) and LeNet-5 on 1x28x28 MNIST (batch 128), BatchNorm
and ReLU after hidden layers.
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

BATCH = {"lenet-300-100": 100, "lenet-5": 128}
ROUNDS = 3


def connsim_steps(arch, masks, x, y, batch, sparse="auto"):
    """One connsim training step (forward, backward, SGD with momentum and weight decay) per
    call, on the next batch of ``x``."""
    net = Network(arch, masks, rng=0, sparse=sparse)
    opt = SGD(net, momentum=0.9, weight_decay=1e-3)
    calls = iter(range(1 << 62))

    def step():
        idx = np.arange(batch) + next(calls) * batch
        idx %= len(y)
        _, g = cross_entropy(np, net.forward(x[idx]), y[idx])
        net.backward(g)
        opt.step(0.01)
    return step


def race(steps, iters, warmup=5):
    """Median seconds per call of each function, in alternating blocks: after ``warmup`` untimed
    calls each, every function runs ``iters // ROUNDS`` timed calls per round, for ``ROUNDS``
    rounds, and keeps its best round's median. A shared host's load then falls on every
    function alike, while each block keeps its own caches warm."""
    for step in steps:
        for _ in range(warmup):
            step()
    best = [float("inf")] * len(steps)
    for _ in range(ROUNDS):
        for i, step in enumerate(steps):
            times = []
            for _ in range(max(1, iters // ROUNDS)):
                t = time.perf_counter()
                step()
                times.append(time.perf_counter() - t)
            best[i] = min(best[i], statistics.median(times))
    return best


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


def torch_steps(torch, arch, x, y, batch):
    """The same training step in PyTorch, on the same batches."""
    model = torch_model(torch, arch)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    calls = iter(range(1 << 62))

    def step():
        idx = (torch.arange(batch) + next(calls) * batch) % len(y)
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx])
        loss.backward()
        opt.step()
    return step


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
                bs = BATCH[name]
                per_epoch = len(y) // bs
                steps = [connsim_steps(arch, None, x, y, bs)]
                if torch is not None:
                    steps.append(torch_steps(torch, arch, x, y, bs))
                t, *tt = race(steps, args.iterations)
                line = f"dense  {name:<14} connsim {t * per_epoch:6.2f}"
                if tt:
                    line += f"   PyTorch {tt[0] * per_epoch:6.2f}   connsim/PyTorch {t / tt[0]:4.2f}"
                print(line, flush=True)
            arch = connsim.get_arch("lenet-300-100", input_shape=(1, 28, 28))
            per_epoch = len(y) // BATCH[arch.name]
            for d in (0.1, 0.05, 0.03, 0.02, 0.01, 0.005):
                masks = connsim.random_masks(arch, connsim.quota(arch, "uniform", d), rng=0)
                steps = [connsim_steps(arch, masks, x, y, 100, sparse=False),
                         connsim_steps(arch, masks, x, y, 100)]
                if torch is not None:
                    steps.append(torch_steps(torch, arch, x, y, 100))
                t_dense, t_auto, *tt = race(steps, args.iterations)
                line = (f"sparse lenet-300-100 d={d:<5} masked dense {t_dense * per_epoch:6.2f}  "
                        f"auto {t_auto * per_epoch:6.2f}  auto/dense {t_auto / t_dense:4.2f}")
                if tt:
                    line += (f"   PyTorch dense {tt[0] * per_epoch:6.2f}   "
                             f"auto/PyTorch {t_auto / tt[0]:4.2f}")
                print(line, flush=True)
            arch = connsim.get_arch("vgg-11", classes=10)
            rng = np.random.default_rng(0)
            xc = rng.normal(size=(64, *arch.input_shape)).astype(np.float32)
            yc = rng.integers(0, 10, 64)
            for d in (0.04, 0.01):
                masks = connsim.random_masks(arch, connsim.quota(arch, "uniform", d), rng=0)
                t_dense, t_auto = race([connsim_steps(arch, masks, xc, yc, 64, sparse=False),
                                        connsim_steps(arch, masks, xc, yc, 64)],
                                       ROUNDS * max(1, min(args.iterations, 9) // ROUNDS), warmup=2)
                print(f"conv   vgg-11 d={d:<5} s/step: masked dense {t_dense:6.3f}  auto "
                      f"{t_auto:6.3f}  auto/dense {t_auto / t_dense:4.2f}", flush=True)


if __name__ == "__main__":
    main()
