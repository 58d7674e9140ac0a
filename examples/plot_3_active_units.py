"""
Active units per layer
======================

A unit is active when it is reachable from the input and leads to the output. The theory gives
the expected number of active units of every layer's output; here for VGG-16 at direct
compression 500 under three quota rules. Uniform quotas keep 1 weight in 500 everywhere, which
leaves the small first layers, and the last convolutions, with few active units; ERK and IGQ keep
almost every unit of every layer active.
"""

import matplotlib.pyplot as plt

import connsim
from connsim.plots import plot_active_units

arch = connsim.get_arch("vgg-16")
compression = 500
fractions = {}
for rule in ("uniform", "erk", "igq"):
    p = connsim.predict(arch, connsim.quota(arch, rule, 1 / compression))
    sizes = p.group_sizes[list(p.layer_groups)]
    fractions[rule] = list(p.expected_active / sizes)
    print(f"{rule:>7}: P(disconnected) {p.p_disconnected:.3g}")

fig, ax = plt.subplots(figsize=(7.5, 4.2), constrained_layout=True)
plot_active_units(list(arch.layer_names), fractions, ax=ax, compression=compression)
plt.show()
