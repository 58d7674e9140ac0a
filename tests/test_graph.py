import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st

from connsim import Block, LayeredGraph, build_graph, chain, effective_edges, get_arch, reachability
from tests.naive import dense_reachability, nx_effective_edges
from tests.strategies import layered_graphs, random_masks


@given(layered_graphs())
def test_reachability_matches_networkx_and_dense_products(graph):
    fwd, bwd = reachability(graph)
    eff = effective_edges(graph, fwd, bwd)
    ref_eff, ref_fwd, ref_bwd = nx_effective_edges(graph)
    dfwd, dbwd = dense_reachability(graph)
    for k, name in enumerate(graph.names):
        assert [i for i in range(graph.sizes[k]) if fwd[k][i]] == [
            i for i in range(graph.sizes[k]) if (name, i) in ref_fwd]
        assert [i for i in range(graph.sizes[k]) if bwd[k][i]] == [
            i for i in range(graph.sizes[k]) if (name, i) in ref_bwd]
        np.testing.assert_array_equal(fwd[k], dfwd[k])
        np.testing.assert_array_equal(bwd[k], dbwd[k])
    for a, b in zip(eff, ref_eff, strict=True):
        np.testing.assert_array_equal(a, b)


@given(layered_graphs())
def test_reversal_swaps_forward_and_backward(graph):
    fwd, bwd = reachability(graph)
    rfwd, rbwd = reachability(graph.reversed())
    for k in range(len(graph.sizes)):
        np.testing.assert_array_equal(fwd[k], rbwd[-1 - k])
        np.testing.assert_array_equal(bwd[k], rfwd[-1 - k])


@given(layered_graphs(), st.data())
def test_removing_an_edge_never_adds_an_effective_edge(graph, data):
    eff = effective_edges(graph)
    candidates = [(k, j) for k, b in enumerate(graph.blocks) for j in range(b.adj.nnz)]
    if not candidates:
        return
    k, j = data.draw(st.sampled_from(candidates))
    blocks = list(graph.blocks)
    adj = blocks[k].adj.toarray()
    coo = blocks[k].adj.tocoo()
    adj[coo.row[j], coo.col[j]] = False
    blocks[k] = Block(blocks[k].src, blocks[k].dst, adj)
    smaller = LayeredGraph(graph.names, graph.sizes, tuple(blocks))
    eff2 = effective_edges(smaller)
    for b_old, b_new, e_old, e_new in zip(graph.blocks, smaller.blocks, eff, eff2, strict=True):
        old = sp.csr_array((e_old, b_old.adj.indices, b_old.adj.indptr), shape=b_old.adj.shape)
        new = sp.csr_array((e_new, b_new.adj.indices, b_new.adj.indptr), shape=b_new.adj.shape)
        assert not (new.toarray() & ~old.toarray()).any()


def test_effective_edges_fast_path_all_coreachable():
    # every destination co-reachable: the fill path; one source unreachable: zeros
    g = chain([np.array([[1, 0], [0, 0]], bool), np.ones((2, 2), bool)])
    fwd, bwd = reachability(g)
    assert fwd[1].tolist() == [True, False]
    eff = effective_edges(g)
    assert eff[0].tolist() == [True]
    assert eff[1].tolist() == [True, True, False, False]


def test_build_graph_channel_level_blocks():
    arch = get_arch("lenet-5")
    masks = random_masks(arch, 0.3, 0)
    g = build_graph(arch, masks)
    # the flatten keeps the 16 channels; fc1 joins channel c to unit o iff any of its 25 weights is kept
    assert g.sizes == (3, 6, 6, 16, 16, 16, 120, 84, 10)
    conv2 = next(b for b in g.blocks if b.layer == "conv2")
    np.testing.assert_array_equal(conv2.adj.toarray(), masks["conv2"].any(axis=(2, 3)).T)
    flat = next(b for b in g.blocks if g.names[b.dst] == "flatten")
    np.testing.assert_array_equal(flat.adj.toarray(), np.eye(16, dtype=bool))
    fc1 = next(b for b in g.blocks if b.layer == "fc1")
    np.testing.assert_array_equal(fc1.adj.toarray(), masks["fc1"].reshape(120, 16, 25).any(axis=2).T)
    res = build_graph(get_arch("resnet-20"), random_masks(get_arch("resnet-20"), 0.1, 1))
    adds = [b for b in res.blocks if res.names[b.dst].endswith(".add")]
    assert len(adds) == 18  # two inputs per block, 9 blocks


def test_layered_graph_validation():
    with pytest.raises(ValueError, match="topological"):
        LayeredGraph(("a", "b"), (2, 2), (Block(1, 0, np.ones((2, 2), bool)),))
    with pytest.raises(ValueError, match="shape"):
        LayeredGraph(("a", "b"), (2, 3), (Block(0, 1, np.ones((2, 2), bool)),))
    with pytest.raises(ValueError, match="NaN"):
        LayeredGraph(("a", "b"), (1, 1), (Block(0, 1, np.array([[np.nan]])),))
    with pytest.raises(ValueError, match="at least one node"):
        LayeredGraph(("a", "b"), (0, 1), ())
    with pytest.raises(ValueError, match="consecutive"):
        chain([np.ones((2, 3)), np.ones((2, 2))])


def test_to_networkx_small_only():
    g = chain([np.ones((2, 2), bool)])
    assert g.to_networkx().number_of_edges() == 4
    with pytest.raises(ValueError, match="max_nodes"):
        g.to_networkx(max_nodes=3)


def test_effective_edges_refuses_states_of_the_wrong_size():
    graph = chain([np.eye(3, dtype=bool), np.ones((3, 2), dtype=bool)])
    fwd, bwd = reachability(graph)
    with pytest.raises(ValueError, match="forward and backward must be one array per group"):
        effective_edges(graph, fwd[:-1], bwd)
