"""The package layout: a cheap ``import connsim`` and a core that never loads the trainer."""

import subprocess
import sys

import pytest

CORE = ("architectures", "design", "effective", "graph", "maskio", "masks", "measures", "montecarlo",
        "orders", "quotas", "sampling", "targeting", "theory", "zoo")


def _modules_after(code: str) -> set:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys\nprint(' '.join(sys.modules))"],
                         capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_import_connsim_loads_no_trainer_numba_or_matplotlib():
    mods = _modules_after("import connsim")
    assert not {m for m in mods if m.startswith(("connsim.trainer", "matplotlib", "numba"))}


@pytest.mark.parametrize("module", CORE)
def test_core_module_never_loads_the_trainer(module):
    mods = _modules_after(f"import connsim.{module}")
    assert not {m for m in mods if m.startswith(("connsim.trainer", "matplotlib"))}


def test_public_names_resolve_lazily():
    import connsim

    for name in connsim.__all__:
        assert getattr(connsim, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        connsim.nope  # noqa: B018


def test_old_trainer_module_names_still_import_with_a_deprecation_warning():
    code = ("import warnings\nwarnings.simplefilter('error')\n"
            "try:\n    import connsim.train\nexcept DeprecationWarning as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "connsim.train moved to connsim.trainer.loop" in out
    code = ("import warnings\nwarnings.simplefilter('ignore')\nimport connsim.train, connsim.trainer.loop\n"
            "print(connsim.train.TrainConfig is connsim.trainer.loop.TrainConfig)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_submodules_are_attributes_as_after_an_eager_import():
    import connsim

    assert connsim.theory.predict is connsim.predict
    assert callable(connsim.montecarlo.sample_seeds)


def test_an_old_module_name_leaves_the_new_module_reloadable():
    code = ("import warnings, importlib\nwarnings.simplefilter('ignore')\n"
            "import connsim.trainer.loop as L, connsim.train\n"
            "assert L.__spec__.name == 'connsim.trainer.loop'\n"
            "L.train = None\nimportlib.reload(L)\nprint(callable(L.train))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
