"""The validation boundary (connsim._validation): one message style at every public entry point,
the registries of quota rules and pruning scores, and one index dtype for the Numba kernels."""

import math
from unittest import mock

import numba
import numpy as np
import pytest

from connsim import (
    LayeredGraph,
    build_graph,
    check_masks,
    connectivity,
    effective_edges,
    get_arch,
    measure,
    monte_carlo,
    ones_masks,
    predict,
    prune,
    quota,
    quotas,
    random_masks,
    resolve_density,
    scores,
    target_effective,
)
from connsim._validation import InvalidArgument, InvalidType
from connsim.cli import build_parser, main
from connsim.design import design_quota
from connsim.granularity import group_shape
from connsim.graph import Block
from connsim.imp import prune_survivors
from connsim.montecarlo import count_effective, sampled_masks
from connsim.orders import GlobalOrder
from connsim.quotas import ALL_RULES, register_rule
from connsim.sampling import random_order
from connsim.scores import METHODS, ScoreContext, iterative_keys, method_scores, register_score
from connsim.theory import half_disconnection_compression, predict_rule
from connsim.trainer import TrainConfig

LENET = get_arch("lenet-300-100")
L5 = get_arch("lenet-5")
Q = quota(LENET, "uniform", 0.1)
NAN = math.nan

# (entry point, call, fragment the message must contain); every message names the argument
# ("<argument> must be <what>, got <value>")
BAD = [
    ("quota", lambda: quota(LENET, "uniform", NAN), "density must be a number in [0, 1], got nan"),
    ("quota", lambda: quota(LENET, "igq", 1.5), "density must be a number in [0, 1], got 1.5"),
    ("quota", lambda: quota(LENET, "igq", -0.1), "got -0.1"),
    ("quota", lambda: quota(LENET, "igq", "0.1"), "density must be a number in [0, 1], got '0.1'"),
    ("quota", lambda: quota(LENET, "magic", 0.1), "rule must be one of uniform, uniform+, er"),
    ("quota", lambda: quota(LENET, "custom", densities=[0.1, 0.2]),
     "custom densities must be 3 numbers, one per layer ['fc1', 'fc2', 'fc3'], got [0.1, 0.2]"),
    ("quota", lambda: quota(LENET, "custom", densities=[0.1, NAN, 0.2]), "got [0.1, nan, 0.2]"),
    ("quota", lambda: quota(LENET, "custom", densities={"fc1": 0.1}),
     "custom densities must be a density for each layer"),
    ("quota", lambda: quota(LENET, lambda a, d: [d, d], 0.1),
     "the densities rule '<lambda>' returns must be 3 numbers"),
    ("resolve_density", lambda: resolve_density(compression=0.5),
     "compression must be a finite number >= 1, got 0.5"),
    ("resolve_density", lambda: resolve_density(compression=math.inf), "got inf"),
    ("resolve_density", lambda: resolve_density(sparsity=NAN), "sparsity must be a number in [0, 1]"),
    ("resolve_density", lambda: resolve_density(density=2), "density must be a number in [0, 1]"),
    ("predict", lambda: predict(LENET, [0.1, NAN, 0.1]),
     "densities must be 3 numbers in [0, 1], one per layer ['fc1', 'fc2', 'fc3'], got [0.1, nan"),
    ("predict", lambda: predict(LENET, [0.1, 0.1]), "got [0.1, 0.1]"),
    ("predict", lambda: predict(LENET, [0.1, 1.5, 0.1]), "got [0.1, 1.5, 0.1]"),
    ("predict", lambda: predict(LENET, [[0.1, 0.1, 0.1]]), "one per layer"),
    ("predict_rule", lambda: predict_rule(LENET, "magic", 0.1), "rule must be one of"),
    ("half_disconnection_compression", lambda: half_disconnection_compression(LENET, lo=0.5),
     "lo must be a finite number >= 1, got 0.5"),
    ("half_disconnection_compression",
     lambda: half_disconnection_compression(LENET, lo=10, hi=5), "hi must be a compression above"),
    ("connectivity", lambda: connectivity(LENET, ones_masks(LENET), level="pixel"),
     "level must be one of channel, position, got 'pixel'"),
    ("measure", lambda: measure(LENET, ones_masks(LENET), layout="jax"),
     "layout must be one of torch, keras, got 'jax'"),
    ("check_masks", lambda: check_masks(LENET, {**ones_masks(LENET), "fc1": np.full((300, 784), NAN)}),
     "mask of layer 'fc1' must be 0/1 or boolean, got NaN"),
    ("check_masks", lambda: check_masks(LENET, {**ones_masks(LENET), "fc2": np.ones((3, 3))}),
     "mask of layer 'fc2' must be of the expected shape (100, 300), got (3, 3)"),
    ("LayeredGraph", lambda: LayeredGraph(("a", "b"), (1, 1), (Block(0, 1, np.array([[NAN]])),)),
     "block 0: adjacency must be a 0/1, boolean or weighted adjacency, got NaN"),
    ("monte_carlo", lambda: monte_carlo(LENET, Q, mask_model="nested"),
     "mask_model must be one of exact, bernoulli, got 'nested'"),
    ("monte_carlo", lambda: monte_carlo(LENET, Q, level="pixel"), "level must be one of"),
    ("monte_carlo", lambda: monte_carlo(LENET, Q, samples=0), "samples must be an integer >= 1, got 0"),
    ("monte_carlo", lambda: monte_carlo(LENET, Q, samples=-5), "got -5"),
    ("monte_carlo", lambda: monte_carlo(LENET, Q, samples=2.5), "got 2.5"),
    ("monte_carlo", lambda: monte_carlo(LENET, Q, rng=-1),
     "rng must be None, an integer >= 0, a SeedSequence or a Generator, got -1"),
    ("monte_carlo", lambda: monte_carlo(LENET, Q, rng="abc"), "got 'abc'"),
    ("monte_carlo", lambda: monte_carlo(L5, Q), "q must be a quota for the layers"),
    ("sampled_masks", lambda: sampled_masks(LENET, Q, -1), "seed must be an integer in [0, 4294967295]"),
    ("sampled_masks", lambda: sampled_masks(LENET, Q, 0, mask_model="nested"), "mask_model must be"),
    ("random_masks", lambda: random_masks(LENET, Q, model="poisson"),
     "model must be one of exact, bernoulli, nested, got 'poisson'"),
    ("random_masks", lambda: random_masks(LENET, Q, rng=1.5), "rng must be None, an integer >= 0"),
    ("random_masks", lambda: random_masks(LENET, Q, rng=[1, -2]), "got [1, -2]"),
    ("random_order", lambda: random_order(LENET, rng=True), "got True"),
    ("prune", lambda: prune(LENET, "obd", 0.1), "method must be one of random, magnitude"),
    ("prune", lambda: prune(LENET, "random", 0.1, granularity="block"),
     "granularity must be one of weight, kernel, channel, node, got 'block'"),
    ("prune", lambda: prune(LENET, "random", 0.1, scope="local"), "scope must be one of global"),
    ("prune", lambda: prune(LENET, "random", 0.1, target="both"), "target must be one of direct"),
    ("prune", lambda: prune(LENET, "random", 0.1, level="pixel"), "level must be one of"),
    ("prune", lambda: prune(LENET, "random", 0.1, rule="magic"), "rule must be one of"),
    ("prune", lambda: prune(LENET, "random", 0.1, mask_model="poisson"),
     "mask_model must be one of exact, bernoulli, nested"),
    ("prune", lambda: prune(LENET, "magnitude", NAN), "density must be a number in [0, 1], got nan"),
    ("prune", lambda: prune(LENET, "magnitude", 1.5), "got 1.5"),
    ("prune", lambda: prune(LENET, "magnitude", 0.1, rng=-3), "rng must be None"),
    ("prune", lambda: prune(LENET, "synflow", 0.1, rounds=0), "rounds must be an integer >= 1"),
    ("ScoreContext", lambda: ScoreContext(LENET, {}, np.random.default_rng(0), n_batches=0),
     "n_batches must be an integer >= 1, got 0"),
    ("method_scores", lambda: method_scores("obd", None, "weight", 0.1), "method must be one of"),
    ("group_shape", lambda: group_shape(LENET, "fc1", "block"), "granularity must be one of"),
    ("GlobalOrder.masks", lambda: GlobalOrder(LENET, ones_masks(LENET)).masks(-1),
     "kept must be an integer in [0, 266200], got -1"),
    ("GlobalOrder", lambda: GlobalOrder(LENET, {**ones_masks(LENET), "fc1": np.ones(3)}),
     "scores of layer 'fc1' must be of the expected shape (300, 784), got (3,)"),
    ("target_effective", lambda: target_effective(LENET, random_order(LENET, rng=0), NAN),
     "target effective density must be a number in [0, 1], got nan"),
    ("target_effective", lambda: target_effective(LENET, random_order(LENET, rng=0), 0.1,
                                                  level="pixel"), "level must be one of"),
    ("design_quota", lambda: design_quota(LENET, 0.1, objective="speed"),
     "objective must be one of effective, connectivity, got 'speed'"),
    ("design_quota", lambda: design_quota(LENET, 1.0),
     "density must be a number strictly between 0 and 1, got 1.0"),
    ("prune_survivors", lambda: prune_survivors(LENET, {}, {}, 1.0),
     "fraction must be a number strictly between 0 and 1, got 1.0"),
    ("prune_survivors", lambda: prune_survivors(LENET, {}, {}, 0.2, scope="random"),
     "scope must be one of global, layerwise"),
    ("TrainConfig", lambda: TrainConfig(momentum=1.5), "momentum must be a number in [0, 1), got 1.5"),
    ("TrainConfig", lambda: TrainConfig(lr=NAN), "lr must be a finite number > 0, got nan"),
    ("TrainConfig", lambda: TrainConfig(optimizer="lbfgs"), "optimizer must be one of sgd"),
]


@pytest.mark.parametrize(("entry", "call", "fragment"), BAD,
                         ids=[f"{e}-{k}" for k, (e, _, _) in enumerate(BAD)])
def test_bad_input_is_refused_in_one_style(entry, call, fragment):
    with pytest.raises(InvalidArgument) as info:
        call()
    message = str(info.value)
    assert fragment in message, message
    assert f"{info.value.name} must be {info.value.what}, got {info.value.got}" in message
    assert isinstance(info.value, ValueError)


def test_wrong_types_are_type_errors_too():
    with pytest.raises(TypeError) as info:
        check_masks(LENET, {**ones_masks(LENET), "fc1": np.full((300, 784), "a")})
    assert isinstance(info.value, InvalidType) and "got an array of dtype <U1" in str(info.value)
    with pytest.raises(TypeError, match="masks must be a mapping"):
        check_masks(LENET, [np.ones(3)])


@pytest.mark.parametrize("rng", [None, 0, 2**40, np.int64(3), [1, 2], np.random.SeedSequence(1),
                                 np.random.default_rng(0), np.random.PCG64(2)])
def test_every_seed_numpy_accepts_is_accepted(rng):
    assert sum(int(m.sum()) for m in random_masks(LENET, Q, rng=rng).values()) == int(Q.kept.sum())


# ---------------------------------------------------------------------------- registries


@pytest.fixture
def registries(monkeypatch):
    """Registrations made by a test are undone after it."""
    for registry in (quotas.RULES, scores.ONE_SHOT, scores.ITERATIVE_KEYS):
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))


def _dense_first(arch, density):
    n = np.array([arch.n_params(x) for x in arch.layers], dtype=float)
    rest = (density * n.sum() - n[0]) / n[1:].sum()
    return np.concatenate([[1.0], np.full(len(n) - 1, rest)])


def test_registered_rule_works_end_to_end(registries, capsys):
    register_rule("dense-first-test", _dense_first)
    assert "dense-first-test" in ALL_RULES and ALL_RULES[-1] == "custom"
    q = quota(L5, "dense-first-test", 0.1)
    assert q.densities[0] == 1.0 and q.kept.sum() == round(0.1 * L5.total_params)
    res = prune(L5, "random", 0.1, rule="dense-first-test", rng=0)
    assert [int(res.masks[n].sum()) for n in L5.layer_names] == q.kept.tolist()
    res = prune(L5, "magnitude", 0.1, scope="layerwise", rule="dense-first-test", rng=0)
    assert res.masks["conv1"].all()
    p = predict_rule(L5, "dense-first-test", 0.1)
    assert p.densities.tolist() == q.densities.tolist()
    assert main(["quotas", "--arch", "lenet-5", "--rule", "dense-first-test",
                 "--density", "0.1", "--json"]) == 0
    assert '"rule": "dense-first-test"' in capsys.readouterr().out


def _squared(ctx, granularity):
    return scores.to_groups(ctx.arch, {n: np.asarray(w) ** 2 for n, w in ctx.weights.items()},
                            granularity, "mean")


def _iterative_magnitude(ctx, granularity, density, rounds=3, progress=None):
    return iterative_keys(ctx.arch, density, rounds,
                          lambda masks: scores.score_magnitude(ctx, granularity), granularity,
                          progress)


def test_registered_scores_work_end_to_end(registries):
    register_score("squared-test", _squared)
    register_score("iterative-magnitude-test", _iterative_magnitude, iterative=True)
    assert {"squared-test", "iterative-magnitude-test"} <= set(METHODS)
    ref = prune(LENET, "magnitude", 0.05, rng=0).masks
    for method in ("squared-test", "iterative-magnitude-test"):
        got = prune(LENET, method, 0.05, rng=0).masks  # |w| and w^2 rank alike
        assert all((got[n] == ref[n]).all() for n in LENET.layer_names), method
    rounds = []
    prune(LENET, "iterative-magnitude-test", 0.05, rounds=4, rng=0,
          progress=lambda t, total: rounds.append((t, total)))
    assert rounds[-1] == (4, 4)
    res = prune(L5, "squared-test", 0.2, granularity="kernel", target="effective", rng=0)
    assert res.measurement.effective_density <= 0.2


def test_registered_names_appear_in_the_command_line(registries, capsys):
    register_rule("dense-first-test", _dense_first)
    register_score("squared-test", _squared)
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["prune", "--help"])
    text = capsys.readouterr().out
    assert "squared-test" in text and "dense-first-test" in text


@pytest.mark.parametrize(("register", "name", "fn", "error", "fragment"), [
    (register_rule, "igq", _dense_first, ValueError, "'igq' is already a rule"),
    (register_rule, "custom", _dense_first, ValueError, "'custom' is already a rule"),
    (register_rule, "", _dense_first, TypeError, "name must be a non-empty string"),
    (register_rule, 3, _dense_first, TypeError, "got 3"),
    (register_rule, "new-rule", 0.5, TypeError, "fn must be callable, got 0.5"),
    (register_score, "magnitude", _squared, ValueError, "'magnitude' is already a method"),
    (register_score, "synflow", _squared, ValueError, "'synflow' is already a method"),
    (register_score, "new-score", "magnitude", TypeError, "fn must be callable"),
])
def test_bad_registrations_are_refused(registries, register, name, fn, error, fragment):
    before = (tuple(ALL_RULES), tuple(METHODS))
    with pytest.raises(error) as info:
        register(name, fn)
    assert fragment in str(info.value), str(info.value)
    assert (tuple(ALL_RULES), tuple(METHODS)) == before


def test_a_name_registered_twice_is_refused(registries):
    register_score("squared-test", _squared)
    with pytest.raises(ValueError, match="'squared-test' is already a method"):
        register_score("squared-test", _iterative_magnitude, iterative=True)
    register_rule("dense-first-test", _dense_first)
    with pytest.raises(ValueError, match="'dense-first-test' is already a rule"):
        register_rule("dense-first-test", _dense_first)


# ---------------------------------------------------------------------------- kernels

# the kernels Python calls; the others run inside them (and, loaded from numba's disk cache,
# compile no signature of their own)
ENTRY_KERNELS = ("graph_reach", "graph_effective", "_push_serial", "_pull_serial", "conv_push",
                 "conv_pull", "conv_effective", "pool_push", "pool_pull", "mc_channel", "mc_count",
                 "mc_sample", "binomial_mix", "group_any")
PARALLEL_KERNELS = ("_push_parallel", "_pull_parallel")  # masks of 1 MiB and up, 2+ threads


@pytest.mark.skipif(numba.config.DISABLE_JIT, reason="NUMBA_DISABLE_JIT: kernels are plain Python")
def test_every_kernel_compiles_one_signature():
    from connsim import _kernels

    for name in ("lenet-300-100", "lenet-5", "resnet-20"):
        arch = get_arch(name)
        for density in (0.3, 0.002):
            q = quota(arch, "uniform", density)
            masks = random_masks(arch, q, rng=0)
            for level in ("channel", "position"):
                connectivity(arch, masks, level=level)
                if numba.config.NUMBA_NUM_THREADS > 1:
                    with mock.patch.object(_kernels, "PARALLEL_BYTES", 0):
                        connectivity(arch, masks, level=level)
            effective_edges(build_graph(arch, masks))
            count_effective(arch, masks)
            sampled_masks(arch, q, 1)
            monte_carlo(arch, q, samples=2, rng=0)
            predict(arch, q)

    def writable(sig):  # a read-only mask (memory-mapped, say) is a legitimate second type
        return tuple(t.copy(readonly=False) if isinstance(t, numba.types.Array) else t
                     for t in sig)

    compiled = {name: len({writable(s) for s in fn.signatures})
                for name, fn in vars(_kernels).items() if hasattr(fn, "signatures")}
    entry = ENTRY_KERNELS + (PARALLEL_KERNELS if numba.config.NUMBA_NUM_THREADS > 1 else ())
    assert set(entry) <= set(compiled)
    assert {name: n for name, n in compiled.items() if n > 1} == {}
    assert {name: compiled[name] for name in entry if compiled[name] != 1} == {}
