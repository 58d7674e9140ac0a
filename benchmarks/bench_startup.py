"""Start-up cost of ``import connsim`` and of ``connsim --help``, against the import of NumPy and
SciPy's sparse module measured in the same run.

    python benchmarks/bench_startup.py [--quick] [--repeat N]

Each command runs in a fresh interpreter ``N`` times (after one warm-up run that fills the OS file
cache and Numba's on-disk cache); min and median wall times are printed. The goal is at most
0.3 s above the baseline (medians); the script exits 1 when it is missed, except with ``--quick``
(a smoke run: CI machines are too busy for timings to mean anything).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

GOAL_S = 0.3
COMMANDS = {
    "baseline: import numpy, scipy.sparse": [sys.executable, "-c", "import numpy, scipy.sparse"],
    "import connsim": [sys.executable, "-c", "import connsim"],
    "import connsim; connsim.get_arch": [sys.executable, "-c",
                                         "import connsim; connsim.get_arch('vgg-19')"],
    "connsim --help": [sys.executable, "-m", "connsim", "--help"],
    "connsim measure --help": [sys.executable, "-m", "connsim", "measure", "--help"],
}


def wall_times(cmd, repeat):
    subprocess.run(cmd, check=True, capture_output=True)  # warm-up
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    return min(times), statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 runs each, never fail on time")
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()
    repeat = 3 if args.quick else args.repeat
    results = {label: wall_times(cmd, repeat) for label, cmd in COMMANDS.items()}
    base = results["baseline: import numpy, scipy.sparse"][1]
    missed = []
    print(f"{'command':<36} {'min s':>7} {'median s':>9} {'above baseline':>15}")
    for label, (t_min, t_med) in results.items():
        above = t_med - base
        print(f"{label:<36} {t_min:7.3f} {t_med:9.3f} {above:+14.3f}s")
        if label in ("import connsim", "connsim --help") and above > GOAL_S:
            missed.append(label)
    for label in missed:
        print(f"GOAL MISSED: {label} is more than {GOAL_S} s above the baseline")
    return 1 if missed and not args.quick else 0


if __name__ == "__main__":
    sys.exit(main())
