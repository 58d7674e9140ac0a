"""Regenerate the PyTorch checkpoint fixtures of tests/test_maskio.py (needs torch; CI does not).

    python tools/make_torch_fixtures.py

Writes tiny files saved by real torch.save, with their expected masks as .npz beside them, so the
torch-free reader is tested against the genuine format.
"""

import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.utils.prune as prune

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "tests", "data")


def expected(masks, name):
    np.savez(os.path.join(HERE, name), **{k: v.numpy().astype(bool) for k, v in masks.items()})


def main():
    torch.manual_seed(0)
    # 1. torch.nn.utils.prune: weight_orig + weight_mask buffers (mlp:6-5-4-3)
    mlp = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))
    for layer in (mlp[0], mlp[2], mlp[4]):
        prune.random_unstructured(layer, "weight", 0.5)
    torch.save(mlp.state_dict(), os.path.join(HERE, "mlp_prune_api.pt"))
    expected({"fc1": mlp[0].weight_mask, "fc2": mlp[2].weight_mask, "fc3": mlp[4].weight_mask},
             "mlp_prune_api_expected.npz")

    # 2. plain weights with zeros, LeNet-5 with BatchNorm, float16, inside a training checkpoint
    net = nn.Sequential(
        nn.Conv2d(3, 6, 5), nn.BatchNorm2d(6), nn.ReLU(), nn.AvgPool2d(2),
        nn.Conv2d(6, 16, 5), nn.BatchNorm2d(16), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
    ).half()
    masks = {}
    names = ["conv1", "conv2", "fc1", "fc2", "fc3"]
    layers = [m for m in net if isinstance(m, nn.Conv2d | nn.Linear)]
    with torch.no_grad():
        for name, layer in zip(names, layers, strict=True):
            keep = torch.rand(layer.weight.shape) < 0.3
            layer.weight.mul_(keep)
            masks[name] = keep
    torch.save({"epoch": 3, "state_dict": net.state_dict()}, os.path.join(HERE, "lenet5_ckpt.pth"))
    expected(masks, "lenet5_ckpt_expected.npz")


if __name__ == "__main__":
    main()
