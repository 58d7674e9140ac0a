"""Speed-up of a Monte Carlo study on 2 local Dask workers over 1, measured in the same run.

    python benchmarks/bench_study.py [--quick]

The study: Monte Carlo (Bernoulli masks, channel level) on LeNet-300-100 and VGG-19 under
uniform and IGQ quotas at 4 compressions, 2 seeds (16 tasks of about the same size). Each
configuration first runs a warm-up study (worker start-up and Numba compilation are paid there,
the kernels are cached on disk), then the timed study into a fresh database. Reports wall time
of 1 and 2 workers (the driver's run_study call, cluster start-up included, and the tasks' own
summed seconds) and the ratio. Run it on a quiet machine: the workers use one thread each.
"""

import argparse
import os
import tempfile
import time

from connsim.study import load_study
from connsim.studyrun import run_study

STUDY = """
kind = "montecarlo"
[axes]
arch = {arch}
rule = ["uniform", "igq"]
compression = [10, 100, 1000, 10000]
seed = [0, 1]
[settings]
samples = {samples}
theory = false
"""


def timed(folder, name, workers, arch, samples):
    path = os.path.join(folder, f"{name}.toml")
    with open(path, "w") as f:
        f.write(STUDY.format(arch=arch, samples=samples))
    study = load_study(path)
    t = time.perf_counter()
    summary = run_study(study, workers=workers)
    assert summary.failed == 0
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (CI; no timing claims)")
    args = ap.parse_args()
    arch = '["lenet-300-100"]' if args.quick else '["lenet-300-100", "vgg-19"]'
    samples = 20 if args.quick else 400
    with tempfile.TemporaryDirectory() as folder:
        times = {}
        for workers in (1, 2):
            timed(folder, f"warm{workers}", workers, arch, 2)
            times[workers] = timed(folder, f"run{workers}", workers, arch, samples)
            print(f"{workers} worker(s): {times[workers]:.1f} s", flush=True)
    print(f"speed-up of 2 workers over 1: {times[1] / times[2]:.2f}x")


if __name__ == "__main__":
    main()
