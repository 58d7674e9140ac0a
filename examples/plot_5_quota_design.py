"""
Designed quotas against uniform, ERK and IGQ
============================================

:func:`connsim.design_quota <connsim.design.design_quota>` optimises the per-layer densities of
random pruning under the exact direct budget, with the theory as the objective: here the expected
effective weights of LeNet-5. Left: the expected effective compression of each rule (lower is
better: fewer kept weights are wasted). Right: the per-layer densities of each rule at direct
compression 300. The script prints the values behind the left panel.
"""

import matplotlib.pyplot as plt
import numpy as np

import connsim

arch = connsim.get_arch("lenet-5")
compressions = (30, 100, 300, 600)
rules = ("uniform", "erk", "igq")

effective = {rule: [] for rule in (*rules, "designed")}
densities = {}
for c in compressions:
    for rule in rules:
        q = connsim.quota(arch, rule, 1 / c)
        effective[rule].append(connsim.predict(arch, q).effective_compression)
        if c == 300:
            densities[rule] = q.densities
    design = connsim.design_quota(arch, 1 / c, objective="effective")
    effective["designed"].append(design.prediction.effective_compression)
    if c == 300:
        densities["designed"] = design.quota.densities
    print(f"c={c}: " + ", ".join(f"{r} {v[-1]:.0f}" for r, v in effective.items()))

fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2), constrained_layout=True)
for k, (rule, ys) in enumerate(effective.items()):
    ys = np.minimum(ys, 1e7)  # an expected effective weight count near 0 is shown at the top
    left.plot(compressions, ys, "o-", color=f"C{k}", label=rule)
left.plot(compressions, compressions, "k--", lw=1, label="effective = direct")
left.set(xscale="log", yscale="log", xlabel="direct compression",
         ylabel="expected effective compression (theory)", title="LeNet-5")
left.legend(fontsize=8)
left.grid(True, which="both", alpha=0.25)

x = np.arange(len(arch.layer_names))
width = 0.8 / len(densities)
for k, (rule, d) in enumerate(densities.items()):
    right.bar(x + (k - (len(densities) - 1) / 2) * width, d, width, color=f"C{k}", label=rule)
right.set_xticks(x, arch.layer_names)
right.set(yscale="log", ylabel="layer density", title="densities at direct compression 300")
right.legend(fontsize=8)
plt.show()
