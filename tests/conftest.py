import os
import tracemalloc

import pytest
import scipy.linalg  # noqa: F401 - loads SciPy's BLAS so that the limit below reaches it
from hypothesis import HealthCheck, settings
from threadpoolctl import threadpool_limits

from connsim.trainer.backend import register_backend
from tests.strict import strict

# the strict CPU double of CuPy (tests/strict.py): trainer tests run on it as backend "strict"
register_backend("strict", lambda: strict)
TRAINER_BACKENDS = ("numpy", "strict")

# One BLAS thread for the whole suite: BLAS threads otherwise fight Numba's and each other on small
# machines (one trainer test took 105 s with default threads, 8 s with one BLAS thread). Every BLAS
# must be loaded first: the limit reaches only libraries already in the process.
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
