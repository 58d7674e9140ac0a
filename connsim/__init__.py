"""connsim: neural-network pruning as graph connectivity.

Count what is really left of a pruned network: effective (input-to-output connected) weights next
to the direct (nonzero) ones, at channel or exact position level.

``import connsim`` is cheap: each public name below is imported from its module on first use, so
a script that only reads an architecture never loads Numba, SciPy's sparse module or the trainer.

Examples
--------
>>> import connsim
>>> arch = connsim.get_arch("lenet-300-100")
>>> arch.total_params
266200
"""

import sys
import warnings
from importlib import import_module
from importlib.machinery import ModuleSpec

__version__ = "0.1.0"

_EXPORTS = {
    "architectures": ("ArchBuilder", "Architecture", "Node", "SpecError", "from_dict", "load_arch"),
    "design": ("design_quota",),
    "effective": ("Connectivity", "connectivity", "effective_masks"),
    "graph": ("Block", "LayeredGraph", "build_graph", "chain", "effective_edges", "reachability"),
    "maskio": ("load_masks", "save_masks"),
    "masks": ("check_masks", "ones_masks"),
    "measures": ("LayerMeasure", "Measurement", "measure", "resolve_density", "summarize"),
    "montecarlo": ("monte_carlo",),
    "orders": ("GlobalOrder", "LayerwiseOrder", "keep_ranks", "topk_masks"),
    "pruning": ("prune",),
    "quotas": ("ALL_RULES", "InfeasibleQuota", "Quota", "kept_counts", "quota", "register_rule"),
    "sampling": ("random_masks", "random_order"),
    "scores": ("METHODS", "register_score"),
    "targeting": ("TargetResult", "target_effective"),
    "theory": ("predict",),
    "zoo": ("get_arch",),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:  # a submodule, as after an eager import (connsim.theory)
        try:
            return import_module(f".{name}", __name__)
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module 'connsim' has no attribute {name!r}") from None
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))


# ----------------------------------------------------------------- moved modules (deprecated)

_MOVED = {f"{__name__}.{m}": f"{__name__}.trainer.{m}"
          for m in ("backend", "data", "layers", "network", "optim")}
_MOVED[f"{__name__}.train"] = f"{__name__}.trainer.loop"


class _MovedModules:
    """Lets ``import connsim.train`` (and the other trainer modules' old names) keep working,
    with a DeprecationWarning that names the new module (a meta path finder and its loader)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in _MOVED:
            return None
        warnings.warn(f"{fullname} moved to {_MOVED[fullname]}; import it from there (the old "
                      "name will be removed)", DeprecationWarning, stacklevel=2)
        return ModuleSpec(fullname, self)

    def create_module(self, spec):
        module = import_module(_MOVED[spec.name])
        self._spec = module.__spec__  # the import system replaces it with the alias's
        return module

    def exec_module(self, module):
        module.__spec__ = self._spec


sys.meta_path.append(_MovedModules())
