"""
Probability that random pruning disconnects a network
======================================================

P(disconnected) is the probability that no path from the input to the output survives. The exact
theory propagates the distribution of the number of reachable units layer by layer; the points
are Monte Carlo estimates with their 95 % Wilson intervals. The dotted lines mark, for each rule,
the direct compression at which LeNet-5 is disconnected half of the time
(:func:`~connsim.theory.half_disconnection_compression`); the script prints them.
"""

import matplotlib.pyplot as plt
import numpy as np

import connsim
from connsim.plots import plot_disconnection
from connsim.theory import half_disconnection_compression

arch = connsim.get_arch("lenet-5")
rules = ("uniform", "erk", "igq")
grid = np.geomspace(10, 3000, 50)
checked = (30, 100, 300, 1000)

curves = {}
for rule in rules:
    theory = [connsim.predict(arch, connsim.quota(arch, rule, 1 / c)) for c in grid]
    mcs = [connsim.monte_carlo(arch, connsim.quota(arch, rule, 1 / c), samples=300, rng=k)
           for k, c in enumerate(checked)]
    curves[rule] = {
        "compression": list(grid),
        "p_disconnected": [p.p_disconnected for p in theory],
        "mc_compression": list(checked),
        "mc_p_disconnected": [mc.p_disconnected for mc in mcs],
        "mc_p_ci": [mc.p_disconnected_ci for mc in mcs],
    }

fig, ax = plt.subplots(figsize=(6.4, 4.4), constrained_layout=True)
plot_disconnection(curves, ax=ax)
for k, rule in enumerate(rules):
    half = half_disconnection_compression(arch, rule)
    ax.axvline(half, color=f"C{k}", ls=":", lw=1)
    print(f"{rule:>7}: P(disconnected) = 1/2 at direct compression {half:.0f}")
ax.set_title("LeNet-5: theory (lines) and Monte Carlo (points)")
plt.show()
