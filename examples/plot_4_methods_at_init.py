"""
Pruning methods at initialisation
=================================

Each method prunes LeNet-5 at initialisation (no training) to a range of direct compressions, and
every mask is measured at the position level. Methods that keep effective = direct lie on the
diagonal; a curve that bends upwards prunes weights that end up cut off, and an x on the top edge
marks a disconnected network. SNIP scores one batch of a synthetic data set of LeNet-5's input
shape; SynFlow runs 20 rounds here (100 by default) to stay quick.
"""

import matplotlib.pyplot as plt

import connsim
from connsim.plots import plot_compression
from connsim.trainer import load_dataset

arch = connsim.get_arch("lenet-5")
data = load_dataset("synthetic", input_shape=arch.input_shape, classes=10)
compressions = (10, 30, 100, 300)
methods = {
    "synflow": {"method": "synflow", "rounds": 20},
    "snip": {"method": "snip", "data": data},
    "magnitude": {"method": "magnitude"},
    "random (uniform)": {"method": "random", "rule": "uniform"},
    "random (igq)": {"method": "random", "rule": "igq"},
}

curves = {}
for label, kw in methods.items():
    direct, effective = [], []
    for c in compressions:
        r = connsim.prune(arch, kw["method"], 1 / c, level="position", rng=0,
                          **{k: v for k, v in kw.items() if k != "method"})
        direct.append(r.measurement.compression)
        effective.append(r.measurement.effective_compression)
    curves[label] = {"compression": direct, "effective_compression": effective}
    print(f"{label:>16}: " + ", ".join(f"{d:.0f} -> {e:.0f}" for d, e in zip(direct, effective,
                                                                             strict=True)))

fig, ax = plt.subplots(figsize=(6.4, 4.8), constrained_layout=True)
plot_compression(curves, ax=ax, kind="measured",
                 title="LeNet-5 at initialisation, position level")
plt.show()
