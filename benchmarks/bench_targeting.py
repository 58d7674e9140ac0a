"""Effective targeting cost: probes, total time, and time per probe relative to one effective-mask
pass on the final masks, all in the same run.

    python benchmarks/bench_targeting.py [--quick]

Random pruning with nested priorities under a quota rule; the target is the effective density at
the given compression. One probe = build the masks at K kept weights from the ranks + one
effective-mask pass (connsim.measure).
"""

import argparse
import math
import time

import connsim
from connsim import measure, random_order, target_effective


def run(name, compression, rule, level, seed=0):
    arch = connsim.get_arch(name)
    order = random_order(arch, rule, rng=seed)
    target_effective(connsim.get_arch("mlp:4-4-2"), random_order(connsim.get_arch("mlp:4-4-2")),
                     0.5)  # compile
    t0 = time.perf_counter()
    res = target_effective(arch, order, 1 / compression, level=level)
    total = time.perf_counter() - t0
    reps = []
    for _ in range(3):
        t = time.perf_counter()
        measure(arch, res.masks, level=level)
        reps.append(time.perf_counter() - t)
    one_pass = min(reps)
    t = time.perf_counter()
    order.masks(res.kept)
    build = time.perf_counter() - t
    m = res.measurement
    print(f"{name:<14} {rule:<8} {level:<8} target c={compression:<6} probes {res.probes:>3} "
          f"(log2 N = {math.log2(arch.total_params):.1f})  total {total:7.2f} s  "
          f"per probe {total / res.probes * 1e3:8.1f} ms = {total / res.probes / one_pass:4.2f} "
          f"x one effective pass ({one_pass * 1e3:.1f} ms; mask build {build * 1e3:.1f} ms)  "
          f"-> direct c={m.compression:.1f}, effective c={m.effective_compression:.1f}",
          flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    run("lenet-300-100", 100, "uniform", "channel")
    run("lenet-300-100", 100, "igq", "channel")
    if args.quick:
        run("lenet-5", 100, "igq", "position")
        return
    run("vgg-19", 1000, "uniform", "channel")
    run("vgg-19", 1000, "igq", "channel")
    run("vgg-19", 1000, "igq", "position")


if __name__ == "__main__":
    main()
