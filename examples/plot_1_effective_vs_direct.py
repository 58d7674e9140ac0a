"""
Effective vs direct compression under quota rules
=================================================

Random pruning keeps a share of every layer's weights, set by a layerwise quota rule. The lines
are the exact theory for Bernoulli masks: the expected effective compression N / E[effective]
(solid) and the effective compression of the masks that stay connected (dashed). The points are
Monte Carlo means over masks with exact per-layer counts, the masks ``connsim prune`` draws, with
two standard errors. Under uniform quotas LeNet-300-100 is effectively far sparser than its direct
compression says long before it disconnects; IGQ stays close to the diagonal much longer.
"""

import matplotlib.pyplot as plt
import numpy as np

import connsim
from connsim.plots import plot_compression

arch = connsim.get_arch("lenet-300-100")
rules = ("uniform", "erk", "igq")
grid = np.geomspace(2, 5000, 40)  # theory: cheap, so a fine grid
checked = (10, 100, 300, 1000)  # Monte Carlo points

curves = {}
for rule in rules:
    theory = [connsim.predict(arch, connsim.quota(arch, rule, 1 / c)) for c in grid]
    bands, mc_x = [], []
    for k, c in enumerate(checked):
        mc = connsim.monte_carlo(arch, connsim.quota(arch, rule, 1 / c), samples=200,
                                 mask_model="exact", rng=k)
        bands.append(mc.effective_compression_band(z=2.0))
        mc_x.append(c)
    centre, low, high = (list(b) for b in zip(*bands, strict=True))
    curves[rule] = {
        "compression": [p.compression for p in theory],
        "effective_compression": [p.effective_compression for p in theory],
        "effective_compression_connected": [p.effective_compression_connected for p in theory],
        "mc_compression": mc_x,
        "mc_effective_compression": centre,
        "mc_lo": low,
        "mc_hi": high,
    }

fig, ax = plt.subplots(figsize=(6.4, 4.8), constrained_layout=True)
plot_compression(curves, ax=ax, title="LeNet-300-100: random pruning under quota rules")
plt.show()
