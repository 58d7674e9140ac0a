"""Theory and Monte Carlo cost against named baselines, measured in the same run.

    python benchmarks/bench_theory.py [--quick] [--plot PATH]

1. Width scaling of the exact theory: ``predict`` on the chain 784-W-W-W-10 with densities that
   put every hidden layer's reach probability near 1/2 (the widest count distributions, so the
   largest tables), W from 10^3 to 10^5. Baseline ``dense``: the same propagation with a full
   (support x width) table of ``scipy.stats.binom.pmf`` per transition, the method the banded
   kernel replaced (only up to W = 10^4: beyond, its tables need several GB). Peak memory is
   measured with ``tracemalloc`` (NumPy's allocations included). Goal: W = 10^5 in <= 2 s and
   <= 1 GB, time close to linear in W (the banded cost is support x band, both ~sqrt(W)).
2. ``design_quota`` on ResNet-18 at compression 1000 (60 evaluations): time and minor page faults.
3. Theory vs Monte Carlo on a 50-point compression grid (VGG-19, uniform quotas, 10 to 10^4): the
   Monte Carlo sample count that brings the standard error of the mean effective weights to 1 %
   of the mean (from a 50-sample pilot per point), as projected time over theory time.
4. Monte Carlo throughput (samples/s, 1 thread) on LeNet-300-100 at compression 100 and VGG-19 at
   1000, against ``previous release``: the previous release's channel-level sampler and counter,
   as they were (one ``np.random.randint`` call per draw into a fresh byte bitmap, the group
   edge of every kept weight worked out with integer divisions in each of three passes), on the
   same seeds; the two must give the same samples exactly. The two alternate, 5 rounds each (min
   and median time). Goal: >= 3x its samples/s, by the minimum times.

Every method runs once before timing; times are the minimum of 3 runs (in section 4, of 5
alternating rounds). With ``--quick`` (what CI
runs) the sizes are small and no goal is asserted; otherwise the script exits 1 when a goal is
missed. ``--plot`` draws the width scaling (log-log) to PATH.
"""

import argparse
import math
import resource
import sys
import time
import tracemalloc

import numba
import numpy as np
from numba import njit
from scipy.stats import binom

import connsim
import connsim.theory as theory
from connsim.design import design_quota
from connsim.montecarlo import _Lowered, monte_carlo, sample_seeds


def dense_transition(pmf, n_dst, q, log_miss0=0.0, share=1.0):
    """Baseline: one full (support x width) table of SciPy binomial pmfs per transition."""
    rows = np.flatnonzero(pmf > theory.TINY)
    lq = math.log1p(-q) if q < 1 else -math.inf
    with np.errstate(invalid="ignore"):
        lm = np.where(rows > 0, rows * share * lq, 0.0) + log_miss0
    table = binom.pmf(np.arange(n_dst + 1)[None, :], n_dst, -np.expm1(lm)[:, None])
    return pmf[rows] @ table


def timed(fn, repeat=3):
    fn()
    best = math.inf
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def peak_bytes(fn):
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def width_case(w):
    arch = connsim.get_arch(f"mlp:784-{w}-{w}-{w}-10")
    return arch, [math.log(2) / 784] + [math.log(2) / (w / 2)] * 3


def width_scaling(widths, dense_up_to):
    rows = []
    print("width scaling: predict on 784-W-W-W-10, hidden reach probability ~1/2")
    print(f"{'W':>8} {'banded':>10} {'peak':>9} {'dense':>10} {'peak':>9} {'dense/banded':>13}")
    for w in widths:
        arch, d = width_case(w)
        t_band = timed(lambda a=arch, d=d: theory.predict(a, d))
        m_band = peak_bytes(lambda a=arch, d=d: theory.predict(a, d))
        t_dense = m_dense = math.nan
        if w <= dense_up_to:
            banded = theory.predict(arch, d)
            theory.transition, keep = dense_transition, theory.transition
            try:
                t_dense = timed(lambda a=arch, d=d: theory.predict(a, d), repeat=1)
                m_dense = peak_bytes(lambda a=arch, d=d: theory.predict(a, d))
                ref = theory.predict(arch, d)
            finally:
                theory.transition = keep
            rel = np.max(np.abs(banded.expected_effective - ref.expected_effective)
                         / ref.expected_effective)
            assert rel < 1e-12, f"banded and dense tables disagree at W = {w}: {rel:.2g}"
        rows.append((w, t_band, m_band, t_dense, m_dense))
        print(f"{w:>8} {t_band * 1e3:>8.1f}ms {m_band / 2**20:>7.1f}MB {t_dense * 1e3:>8.1f}ms "
              f"{m_dense / 2**20:>7.1f}MB {t_dense / t_band:>12.1f}x")
    w = np.array([r[0] for r in rows], float)
    slope = np.polyfit(np.log(w), np.log([r[1] for r in rows]), 1)[0]
    print(f"banded time grows as W^{slope:.2f} over W = {w[0]:.0e}..{w[-1]:.0e}")
    return rows, slope


def design_cost(name, c, maxfev):
    arch = connsim.get_arch(name)
    design_quota(arch, 1 / c, maxfev=5)
    r0, t = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    design_quota(arch, 1 / c, maxfev=maxfev)
    dt, r1 = time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF)
    print(f"design_quota {name} at compression {c} ({maxfev} evaluations): {dt:.2f} s, "
          f"{r1.ru_minflt - r0.ru_minflt} minor page faults, {r1.ru_stime - r0.ru_stime:.2f} s "
          "system time")


def theory_vs_montecarlo(name):
    arch = connsim.get_arch(name)
    grid = np.geomspace(10, 1e4, 50)
    quotas = [connsim.quota(arch, "uniform", 1 / c) for c in grid]
    theory.predict(arch, quotas[0])
    monte_carlo(arch, quotas[-1], samples=2, rng=0)
    t = time.perf_counter()
    for q in quotas:
        theory.predict(arch, q)
    t_theory = time.perf_counter() - t
    print(f"{name}: theory on a 50-point grid: {t_theory:.2f} s ({t_theory / 50 * 1e3:.1f} ms "
          "per point)")
    projected = pilot_total = 0.0
    for q in quotas:
        t = time.perf_counter()
        mc = monte_carlo(arch, q, samples=50, rng=1)
        dt = (time.perf_counter() - t) / 50
        pilot_total += dt * 50
        mean, sd = mc.mean_effective_params, mc.total_effective.std(ddof=1)
        need = max((sd / (0.01 * mean)) ** 2 if mean > 0 else 2500, 1.0)
        projected += dt * need
    print(f"{name}: Monte Carlo at 1 % relative standard error on the same grid: projected "
          f"{projected:.1f} s (pilot runs {pilot_total:.1f} s) = {projected / t_theory:.0f}x "
          "the theory")


@njit
def _previous_distinct(n, k):
    seen = np.zeros(n, dtype=np.bool_)
    m = k if 2 * k <= n else n - k
    picked = np.empty(m, dtype=np.int64)
    c = 0
    while c < m:
        r = np.random.randint(0, n)  # noqa: NPY002
        if not seen[r]:
            seen[r] = True
            picked[c] = r
            c += 1
    return picked if m == k else np.flatnonzero(~seen).astype(np.int64)


@njit
def _previous_ends(p, k, a, b):
    g = p // k if k > 1 else p
    o = g // a
    i = g - o * a
    if b == 0:
        return i, o
    return (o // b) * a + i, o


@njit
def _previous_count(pos, offsets, l_src, l_dst, l_a, l_b, l_k, e_kind, e_src, e_dst, e_layer,
                    e_off, eff_row, active_row):
    n_layers = l_src.shape[0]
    n_groups = offsets.shape[0] - 1
    fwd = np.zeros(offsets[-1], dtype=np.bool_)
    bwd = np.zeros(offsets[-1], dtype=np.bool_)
    fwd[offsets[0]:offsets[1]] = True
    bwd[offsets[n_groups - 1]:offsets[n_groups]] = True
    for e in range(e_kind.shape[0]):
        a, b = offsets[e_src[e]], offsets[e_dst[e]] + e_off[e]
        if e_kind[e] == 1:
            for j in range(offsets[e_src[e] + 1] - a):
                if fwd[a + j]:
                    fwd[b + j] = True
        else:
            lay = e_layer[e]
            for p in pos[lay]:
                i, o = _previous_ends(p, l_k[lay], l_a[lay], l_b[lay])
                if fwd[a + i]:
                    fwd[b + o] = True
    for e in range(e_kind.shape[0] - 1, -1, -1):
        a, b = offsets[e_src[e]], offsets[e_dst[e]] + e_off[e]
        if e_kind[e] == 1:
            for j in range(offsets[e_src[e] + 1] - a):
                if bwd[b + j]:
                    bwd[a + j] = True
        else:
            lay = e_layer[e]
            for p in pos[lay]:
                i, o = _previous_ends(p, l_k[lay], l_a[lay], l_b[lay])
                if bwd[b + o]:
                    bwd[a + i] = True
    for lay in range(n_layers):
        a, b = offsets[l_src[lay]], offsets[l_dst[lay]]
        c = 0
        for p in pos[lay]:
            i, o = _previous_ends(p, l_k[lay], l_a[lay], l_b[lay])
            if fwd[a + i] and bwd[b + o]:
                c += 1
        eff_row[lay] = c
        act = 0
        for j in range(b, offsets[l_dst[lay] + 1]):
            if fwd[j] and bwd[j]:
                act += 1
        active_row[lay] = act
    for j in range(offsets[n_groups - 1], offsets[n_groups]):
        if fwd[j]:
            return False
    return True


@njit
def previous_release(seeds, bernoulli, offsets, l_src, l_dst, l_a, l_b, l_k, l_nw, l_d, l_kept,
                     e_kind, e_src, e_dst, e_layer, e_off, eff, disc, active):
    """Baseline: the previous release's channel-level Monte Carlo, its sampler and counter as
    they were (run on one thread): Numba's ``np.random.randint`` per draw into a fresh byte
    bitmap per layer, and the group edge of every kept weight worked out again in each of the
    three passes over the kept weights."""
    n_layers = l_src.shape[0]
    for s in range(seeds.shape[0]):
        np.random.seed(seeds[s])  # noqa: NPY002
        pos = []
        for lay in range(n_layers):
            k = np.random.binomial(l_nw[lay], l_d[lay]) if bernoulli else l_kept[lay]  # noqa: NPY002
            pos.append(_previous_distinct(l_nw[lay], k))
        disc[s] = _previous_count(pos, offsets, l_src, l_dst, l_a, l_b, l_k, e_kind, e_src, e_dst,
                                  e_layer, e_off, eff[s], active[s])


def race_montecarlo(name, c, n, rounds):
    """``monte_carlo`` and the previous release on ``n`` samples of ``name`` at compression ``c``
    (the same seeds, checked to give the same samples), timed in alternation: their times."""
    arch = connsim.get_arch(name)
    q = connsim.quota(arch, "uniform", 1 / c)
    low = _Lowered.of(arch)
    sampling = (np.asarray(q.params, np.int64), np.asarray(q.densities, np.float64),
                np.asarray(q.kept, np.int64))
    eff, active = np.zeros((2, n, len(q.params)), np.int64)
    disc = np.zeros(n, bool)
    seeds = sample_seeds(n, 2)
    runs = {"connsim": lambda: monte_carlo(arch, q, samples=n, rng=2),
            "previous": lambda: previous_release(seeds, True, low.offsets, *low.layers, *sampling,
                                                 *low.edges, eff, disc, active)}
    mc = runs["connsim"]()
    runs["previous"]()
    if not (np.array_equal(eff, mc.effective) and np.array_equal(disc, mc.disconnected)
            and np.array_equal(active, mc.active)):
        raise AssertionError(f"{name}: samples differ from the previous release's")
    times = {k: [] for k in runs}
    for _ in range(rounds):
        for k, fn in runs.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return times


def montecarlo_throughput(cases, quick, rounds=5):
    """Samples/s at 1 thread against the previous release (:func:`race_montecarlo`), min and
    median of ``rounds``; returns the missed goals (>= 3x the previous release, by the minimum
    times)."""
    print(f"Monte Carlo, 1 thread (samples/s, {rounds} alternating rounds: min / median time), "
          "against the previous release's kernel")
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    missed = []
    try:
        for name, c, n in cases:
            times = race_montecarlo(name, c, n, rounds)
            best = {k: min(v) for k, v in times.items()}
            med = {k: float(np.median(v)) for k, v in times.items()}
            ratio = best["previous"] / best["connsim"]
            print(f"  {name} at compression {c}, {n} samples: connsim {n / best['connsim']:,.0f}"
                  f" / {n / med['connsim']:,.0f} per s, previous release "
                  f"{n / best['previous']:,.0f} / {n / med['previous']:,.0f} per s: "
                  f"{ratio:.2f}x (median {med['previous'] / med['connsim']:.2f}x; goal >= 3x)")
            if ratio < 3 and not quick:
                missed.append(f"Monte Carlo {name} @ {c}: {ratio:.2f}x the previous release < 3x")
    finally:
        numba.set_num_threads(before)
    return missed


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w = np.array([r[0] for r in rows], float)
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, k, label in ((ax_t, 1, "time (s)"), (ax_m, 2, "peak memory (MB)")):
        scale = 1 if k == 1 else 2**-20
        band = np.array([r[k] for r in rows]) * scale
        dense = np.array([r[k + 2] for r in rows]) * scale
        ax.loglog(w, band, "o-", label="banded (connsim)")
        ok = np.isfinite(dense)
        ax.loglog(w[ok], dense[ok], "s--", label="dense SciPy tables")
        ax.loglog(w, band[0] * w / w[0], ":", color="grey", label="linear in W")
        ax.set_xlabel("hidden width W (784-W-W-W-10)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    ax_t.axhline(2.0, color="red", lw=0.8)
    ax_m.axhline(1024, color="red", lw=0.8)
    ax_t.legend(fontsize=8)
    fig.suptitle("Exact theory (predict): cost against width", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, no goals asserted")
    ap.add_argument("--plot", help="draw the width scaling to this PNG")
    args = ap.parse_args()
    print(f"numba threads {numba.get_num_threads()}")
    widths = [1000, 3000] if args.quick else [1000, 3000, 10_000, 30_000, 100_000]
    rows, slope = width_scaling(widths, dense_up_to=10_000)
    if not args.quick:
        design_cost("resnet-18", 1000, 60)
    theory_vs_montecarlo("lenet-5" if args.quick else "vgg-19")
    mc_missed = montecarlo_throughput([("lenet-300-100", 100, 400 if args.quick else 4000)]
                                      + ([] if args.quick else [("vgg-19", 1000, 1000)]),
                                      args.quick)
    if args.plot:
        plot(rows, args.plot)
    if args.quick:
        return 0
    w, t, m = rows[-1][:3]
    missed = mc_missed + ([f"W = {w}: {t:.2f} s > 2 s"] if t > 2 else [])
    missed += [f"W = {w}: {m / 2**30:.2f} GB > 1 GB"] if m > 2**30 else []
    missed += [f"time grows as W^{slope:.2f} (goal: close to linear, <= 1.2)"] if slope > 1.2 else []
    for line in missed:
        print("GOAL MISSED:", line)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
