"""Monte Carlo after the sample/count split vs the fused kernel it replaced, in the same run.

    python benchmarks/bench_montecarlo.py [--quick] [--repeat R]

Baseline "fused": the single kernel that sampled and counted in one loop body (kept here, as a
named baseline only). "split": :func:`connsim.montecarlo.monte_carlo`, whose kernel samples and
calls the shared count routine (:func:`connsim._kernels.count_effective`) that
:func:`connsim.montecarlo.count_effective` also exposes. Both are compiled first; results must be
identical (asserted); the ratio fused/split >= 1 means the split costs nothing. Reports the minimum
and median over ``--repeat`` runs (the machine is noisy).
"""

import argparse
import statistics
import time

import numba
import numpy as np
from numba import njit, prange

import connsim
from connsim._kernels import sample_distinct
from connsim.montecarlo import _mc_arrays, monte_carlo, sample_seeds


@njit(parallel=True, cache=True, nogil=True)
def fused(seeds, bernoulli, offsets, l_src, l_dst, l_nsrc, l_k, l_nw, l_d, l_kept,
          e_kind, e_src, e_dst, e_layer, eff, disc, active):
    n_layers = l_src.shape[0]
    n_groups = offsets.shape[0] - 1
    for s in prange(seeds.shape[0]):
        np.random.seed(seeds[s])  # noqa: NPY002
        pos = []
        for lay in range(n_layers):
            k = np.random.binomial(l_nw[lay], l_d[lay]) if bernoulli else l_kept[lay]  # noqa: NPY002
            pos.append(sample_distinct(l_nw[lay], k))
        fwd = np.zeros(offsets[-1], dtype=np.bool_)
        bwd = np.zeros(offsets[-1], dtype=np.bool_)
        fwd[offsets[0]:offsets[1]] = True
        bwd[offsets[n_groups - 1]:offsets[n_groups]] = True
        for e in range(e_kind.shape[0]):
            a, b = offsets[e_src[e]], offsets[e_dst[e]]
            if e_kind[e] == 1:
                for j in range(offsets[e_dst[e] + 1] - b):
                    if fwd[a + j]:
                        fwd[b + j] = True
            else:
                lay = e_layer[e]
                for p in pos[lay]:
                    g = p // l_k[lay]
                    if fwd[a + g % l_nsrc[lay]]:
                        fwd[b + g // l_nsrc[lay]] = True
        for e in range(e_kind.shape[0] - 1, -1, -1):
            a, b = offsets[e_src[e]], offsets[e_dst[e]]
            if e_kind[e] == 1:
                for j in range(offsets[e_dst[e] + 1] - b):
                    if bwd[b + j]:
                        bwd[a + j] = True
            else:
                lay = e_layer[e]
                for p in pos[lay]:
                    g = p // l_k[lay]
                    if bwd[b + g // l_nsrc[lay]]:
                        bwd[a + g % l_nsrc[lay]] = True
        for lay in range(n_layers):
            a, b = offsets[l_src[lay]], offsets[l_dst[lay]]
            c = 0
            for p in pos[lay]:
                g = p // l_k[lay]
                if fwd[a + g % l_nsrc[lay]] and bwd[b + g // l_nsrc[lay]]:
                    c += 1
            eff[s, lay] = c
            act = 0
            for j in range(b, offsets[l_dst[lay] + 1]):
                if fwd[j] and bwd[j]:
                    act += 1
            active[s, lay] = act
        hit = False
        for j in range(offsets[n_groups - 1], offsets[n_groups]):
            if fwd[j]:
                hit = True
                break
        disc[s] = not hit


def run_fused(arch, q, samples, seed):
    n = len(q.params)
    eff, active = np.zeros((samples, n), np.int64), np.zeros((samples, n), np.int64)
    disc = np.zeros(samples, bool)
    fused(sample_seeds(samples, seed), True, *_mc_arrays(arch, q.densities, q.kept), eff, disc,
          active)
    return eff, disc, active


def timed(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times), statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (CI)")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    cases = [("lenet-300-100", 100, 4000)] if args.quick else [("lenet-300-100", 100, 20000),
                                                               ("vgg-19", 1000, 1000)]
    print(f"numba threads {numba.get_num_threads()}")
    for name, c, samples in cases:
        arch = connsim.get_arch(name)
        q = connsim.quota(arch, "uniform", 1 / c)
        a = run_fused(arch, q, samples, 1)  # compile and check
        mc = monte_carlo(arch, q, samples=samples, rng=1)
        assert (a[0] == mc.effective).all() and (a[1] == mc.disconnected).all()
        f_min, f_med = timed(lambda a=arch, q=q, n=samples: run_fused(a, q, n, 2), args.repeat)
        s_min, s_med = timed(lambda a=arch, q=q, n=samples: monte_carlo(a, q, samples=n, rng=2),
                             args.repeat)
        print(f"{name} @ compression {c}, {samples} samples: fused {samples / f_min:,.0f} "
              f"samples/s (median {samples / f_med:,.0f}), split {samples / s_min:,.0f} "
              f"(median {samples / s_med:,.0f}); ratio fused/split min {f_min / s_min:.2f}, "
              f"median {f_med / s_med:.2f}")


if __name__ == "__main__":
    main()
