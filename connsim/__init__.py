"""connsim: neural-network pruning as graph connectivity.

Count what is really left of a pruned network: effective (input-to-output connected) weights next
to the direct (nonzero) ones, at channel or exact position level.

Examples
--------
>>> import connsim
>>> arch = connsim.get_arch("lenet-300-100")
>>> arch.total_params
266200
"""

from .architectures import ArchBuilder, Architecture, Node, SpecError, from_dict, load_arch
from .design import design_quota
from .effective import Connectivity, connectivity, effective_masks
from .graph import Block, LayeredGraph, build_graph, chain, effective_edges, reachability
from .maskio import load_masks, save_masks
from .masks import check_masks, ones_masks
from .measures import LayerMeasure, Measurement, measure, resolve_density, summarize
from .montecarlo import monte_carlo
from .orders import GlobalOrder, LayerwiseOrder, keep_ranks, topk_masks
from .pruning import prune
from .quotas import ALL_RULES, InfeasibleQuota, Quota, kept_counts, quota
from .sampling import random_masks, random_order
from .targeting import TargetResult, target_effective
from .theory import predict
from .zoo import get_arch

__version__ = "0.1.0"

__all__ = [
    "ALL_RULES", "ArchBuilder", "Architecture", "Block", "Connectivity", "GlobalOrder",
    "InfeasibleQuota", "LayerMeasure", "LayeredGraph", "LayerwiseOrder", "Measurement", "Node",
    "Quota", "SpecError", "TargetResult", "build_graph", "chain", "check_masks", "connectivity",
    "design_quota", "effective_edges", "effective_masks", "from_dict", "get_arch", "keep_ranks",
    "kept_counts", "load_arch", "load_masks", "measure", "monte_carlo", "ones_masks", "predict",
    "prune", "quota", "random_masks", "random_order", "reachability", "resolve_density",
    "save_masks", "summarize", "target_effective", "topk_masks",
]
