import numpy as np
import pytest

from connsim import get_arch, quota
from connsim.design import design_quota
from connsim.theory import predict


@pytest.mark.parametrize("objective", ["effective", "connectivity"])
def test_design_meets_budget_and_never_loses_to_its_start(objective):
    arch = get_arch("lenet-5")
    d = design_quota(arch, 1 / 300, objective=objective)
    q = d.quota
    assert int(q.kept.sum()) == round(arch.total_params / 300)
    assert abs((q.densities * q.params).sum() - arch.total_params / 300) < 1e-6
    assert ((q.densities > 0) & (q.densities < 1)).all()
    start = predict(arch, quota(arch, "igq", 1 / 300))
    if objective == "effective":
        assert d.prediction.expected_effective_params >= start.expected_effective_params
    else:
        assert d.prediction.p_disconnected <= start.p_disconnected


def test_connectivity_design_beats_uniform_erk_igq_on_lenet5():
    arch = get_arch("lenet-5")
    d = design_quota(arch, 1 / 300, objective="connectivity")
    for rule in ("uniform", "erk", "igq"):
        assert d.prediction.p_disconnected < predict(arch, quota(arch, rule, 1 / 300)).p_disconnected


def test_design_validation():
    arch = get_arch("lenet-5")
    with pytest.raises(ValueError, match="objective"):
        design_quota(arch, 0.01, objective="speed")
    with pytest.raises(ValueError, match="strictly between"):
        design_quota(arch, 1.0)
    calls = []
    design_quota(arch, 0.01, maxfev=10, progress=lambda k, n: calls.append((k, n)))
    assert calls and calls[0] == (1, 10) and np.all(np.diff([c[0] for c in calls]) == 1)
