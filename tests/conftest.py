import importlib.util
import os
import sys
import tracemalloc

import pytest

# run in a Python without the project's dependencies (pytest alone, no install step): say so once
# instead of failing every test module on its imports
_MISSING = [m for m in ("numpy", "scipy", "numba", "networkx", "hypothesis", "connsim")
            if importlib.util.find_spec(m) is None]
if _MISSING:
    raise pytest.UsageError(
        f"this Python ({sys.executable}) lacks {', '.join(_MISSING)}: install the project and "
        "its test extra first, as the README says: python -m pip install -e \".[test]\"")

# One BLAS thread for the whole suite: BLAS threads otherwise fight Numba's and each other on small
# machines (one trainer test took 105 s with default threads, 8 s with one BLAS thread). The
# variables are read when NumPy and SciPy load their BLAS, so they are set before any import.
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
                         "VECLIB_MAXIMUM_THREADS")
for _var in BLAS_THREAD_VARIABLES:
    os.environ[_var] = "1"

import scipy.linalg  # noqa: E402, F401 - loads SciPy's BLAS so that the limit below reaches it
from hypothesis import HealthCheck, settings  # noqa: E402

from connsim.trainer.backend import register_backend  # noqa: E402
from tests.strict import strict  # noqa: E402

# the strict CPU double of CuPy (tests/strict.py): trainer tests run on it as backend "strict"
register_backend("strict", lambda: strict)
TRAINER_BACKENDS = ("numpy", "strict")

try:  # also cap libraries that were loaded before this file (the limit reaches only those)
    from threadpoolctl import threadpool_limits
except ModuleNotFoundError:  # the variables above suffice for a fresh process
    pass
else:
    threadpool_limits(limits=1, user_api="blas")

# JIT compile time makes wall-clock deadlines meaningless; CI derandomizes for reproducibility.
settings.register_profile("default", deadline=None, max_examples=60,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", deadline=None, max_examples=60, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("nojit", deadline=None, max_examples=15, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE",
                                     "ci" if os.environ.get("CI") else "default"))


@pytest.fixture(scope="session")
def data_dir():
    return os.path.join(os.path.dirname(__file__), "data")


def peak_memory(fn, *args):
    """Run ``fn(*args)``; return the exception it raised (or None) and its peak traced
    allocation in bytes."""
    tracemalloc.start()
    try:
        fn(*args)
    except Exception as e:  # the caller checks what was raised
        raised = e
    else:
        raised = None
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return raised, peak
