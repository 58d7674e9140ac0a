"""Theory vs Monte Carlo cost, measured in the same run.

    python benchmarks/bench_theory.py [--quick]

1. Exact theory on a 50-point compression grid (VGG-19, uniform quotas, 10 to 10^4).
2. Monte Carlo for the same grid at "the same precision": the sample count that brings the
   standard error of the mean effective weights to 1 % of the mean (estimated from a 50-sample
   pilot at each point; points where the network is almost surely disconnected need the samples
   that bound P(disconnected) to +-0.01 instead). Reported as projected time = pilot time per
   sample x samples needed.
3. Monte Carlo throughput (samples / second) on LeNet-300-100 at compression 100 and VGG-19 at 1000.
"""

import argparse
import time

import numba
import numpy as np

import connsim
from connsim.montecarlo import monte_carlo
from connsim.theory import predict


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    name = "lenet-5" if args.quick else "vgg-19"
    arch = connsim.get_arch(name)
    grid = np.geomspace(10, 1e4, 50)
    quotas = [connsim.quota(arch, "uniform", 1 / c) for c in grid]
    predict(arch, quotas[0])  # warm-up
    monte_carlo(arch, quotas[-1], samples=2, rng=0)  # compile
    t = time.perf_counter()
    for q in quotas:
        predict(arch, q)
    t_theory = time.perf_counter() - t
    print(f"numba threads {numba.get_num_threads()}")
    print(f"{name}: theory on a 50-point grid: {t_theory:.2f} s ({t_theory / 50 * 1e3:.1f} ms "
          "per point)")
    projected, pilot_total = 0.0, 0.0
    for q in quotas:
        t = time.perf_counter()
        mc = monte_carlo(arch, q, samples=50, rng=1)
        dt = (time.perf_counter() - t) / 50
        pilot_total += dt * 50
        mean, sd = mc.mean_effective_params, mc.total_effective.std(ddof=1)
        need = (sd / (0.01 * mean)) ** 2 if mean > 0 else 2500
        need = max(need, 1.0)
        projected += dt * need
    print(f"{name}: Monte Carlo at 1 % relative standard error on the same grid: projected "
          f"{projected:.1f} s (pilot runs {pilot_total:.1f} s) = {projected / t_theory:.0f}x "
          "the theory")
    for nm, c in (("lenet-300-100", 100), ("vgg-19", 1000)):
        if args.quick and nm == "vgg-19":
            continue
        a = connsim.get_arch(nm)
        q = connsim.quota(a, "uniform", 1 / c)
        monte_carlo(a, q, samples=4, rng=0)
        n = 4000 if nm == "lenet-300-100" else 1000
        t = time.perf_counter()
        monte_carlo(a, q, samples=n, rng=2)
        dt = time.perf_counter() - t
        print(f"Monte Carlo {nm} at compression {c}: {n / dt:,.0f} samples/s "
              f"({n} samples in {dt:.2f} s)")


if __name__ == "__main__":
    main()
