"""The documentation site's sources, checked without building the site.

Every public name must be listed in the API reference (``docs/api``), every user-guide task page
must run its commands while the site builds, and the browser check's judgements
(``tools/check_site.py``) must fail on broken pages. The build itself and the browser run in
CI (``.ci/run``).
"""

import importlib
import importlib.util
import inspect
import pathlib
import pkgutil
import re

import pytest

import connsim

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
API = DOCS / "api"

# Modules that are not public API (docs/api/index.rst says which and why); every other module
# of the package without a leading underscore must have a reference page.
INTERNAL = {"cli", "files", "memory", "ops", "safepickle", "studytasks"}

TASK_PAGES = ("measure", "predict", "design", "prune", "train", "imp", "effective-filters",
              "granularity", "studies")


def public_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(connsim.__path__)
                  if not m.name.startswith("_") and m.name not in INTERNAL)


def public_names(module) -> list[str]:
    """The module's ``__all__``, else the functions and classes it defines without a leading
    underscore (the rule of docs/api/index.rst)."""
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return [n for n, v in vars(module).items() if not n.startswith("_")
            and (inspect.isfunction(v) or inspect.isclass(v)) and v.__module__ == module.__name__]


def documented(page: pathlib.Path) -> set[str]:
    """Qualified names listed in the page's autosummary tables that generate pages."""
    names, module, block = set(), None, None
    for line in page.read_text().splitlines():
        if line.startswith(".. currentmodule::"):
            module = line.split("::", 1)[1].strip()
        elif line.startswith(".. autosummary::"):
            block = {"toctree": False}
        elif block is not None:
            if line.strip().startswith(":toctree:"):
                block["toctree"] = True
            elif line.startswith("   ") and not line.strip().startswith(":") and line.strip():
                if block["toctree"]:
                    names.add(f"{module}.{line.strip().lstrip('~')}")
            elif line.strip() and not line.startswith(" "):
                block = None
    return names


def test_every_public_module_has_a_reference_page_in_the_index():
    index = (API / "index.rst").read_text()
    missing = [m for m in public_modules() if not (API / f"connsim.{m}.rst").is_file()]
    assert not missing, f"modules without an API page (docs/api/connsim.NAME.rst): {missing}"
    unlisted = [m for m in public_modules() if f"   connsim.{m}\n" not in index]
    assert not unlisted, f"API pages missing from the toctree of docs/api/index.rst: {unlisted}"


@pytest.mark.parametrize("name", public_modules())
def test_every_public_name_of_a_module_is_in_the_reference(name):
    module = importlib.import_module(f"connsim.{name}")
    listed = documented(API / f"connsim.{name}.rst")
    missing = [n for n in public_names(module) if f"connsim.{name}.{n}" not in listed]
    assert not missing, (f"public names of connsim.{name} missing from docs/api/connsim.{name}.rst "
                         f"(add them to an autosummary table, or leave them out of __all__): "
                         f"{missing}")


def test_every_name_of_the_connsim_namespace_is_in_the_reference():
    listed = set().union(*(documented(p) for p in API.glob("connsim.*.rst")))
    index = (API / "index.rst").read_text()
    for name in connsim.__all__:
        where = f"connsim.{connsim._WHERE[name]}.{name}"
        assert where in listed, f"connsim.{name} ({where}) has no page in docs/api"
        assert f"   ~{connsim._WHERE[name]}.{name}\n" in index, (
            f"connsim.{name} is missing from the namespace table of docs/api/index.rst")


def test_every_listed_name_exists():
    for page in API.glob("connsim.*.rst"):
        for qualified in documented(page):
            module, _, name = qualified.rpartition(".")
            assert hasattr(importlib.import_module(module), name), f"{page.name}: {qualified}"


def test_the_reference_lists_the_trainer_through_its_all():
    import connsim.trainer

    assert documented(API / "connsim.trainer.rst") == {
        f"connsim.trainer.{n}" for n in connsim.trainer.__all__}


@pytest.mark.parametrize("page", TASK_PAGES)
def test_every_task_page_runs_its_commands_when_the_site_builds(page):
    text = (DOCS / "guide" / f"{page}.md").read_text()
    assert re.search(r"^```\{connsim-(run|python)\}", text, re.M), (
        f"docs/guide/{page}.md shows no command that runs at build time")


def test_every_guide_page_is_in_the_guide():
    index = (DOCS / "guide" / "index.md").read_text()
    for page in (*TASK_PAGES, "concepts"):
        assert f"\n{page}\n" in index, f"docs/guide/{page}.md is not in the guide's toctree"


# ------------------------------------------------------------ the browser check's judgements

def _check_site():
    spec = importlib.util.spec_from_file_location("check_site", ROOT / "tools" / "check_site.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _report(**kw):
    report = {"title": "connsim", "timedOut": False, "images": [], "results": [], "headings": [],
              "ids": [], "nav": [], "text": ""}
    report.update(kw)
    return report


def test_the_browser_check_reads_the_probe_report_and_refuses_a_missing_one():
    cs = _check_site()
    dom = '<html><body><pre id="report">{"title": "a &amp; b", "n": 1}</pre></body></html>'
    assert cs.parse_report(dom) == {"title": "a & b", "n": 1}
    with pytest.raises(ValueError, match="no report"):
        cs.parse_report('<pre id="report">pending</pre>')
    with pytest.raises(ValueError, match="no report"):
        cs.parse_report("<html></html>")


def test_the_browser_check_fails_on_broken_or_missing_images():
    cs = _check_site()
    ok = {"src": "a.png", "cls": "sphx-glr-single-img", "complete": True, "width": 640,
          "height": 480}
    assert cs.image_problems(_report(images=[ok]), 1, "sphx-glr-single-img") == []
    broken = dict(ok, width=0, height=0)
    assert cs.image_problems(_report(images=[broken]), 1)
    assert cs.image_problems(_report(images=[dict(ok, complete=False)]), 1)
    assert cs.image_problems(_report(images=[]), 1)
    assert cs.image_problems(_report(images=[dict(ok, cls="logo")]), 1, "sphx-glr-single-img")


def test_the_browser_check_fails_without_the_search_result_or_the_api_sections():
    cs = _check_site()
    page = "api/generated/connsim.effective.effective_masks.html"
    found = [{"href": page + "#connsim.effective.effective_masks", "text": "effective_masks"}]
    assert cs.search_problems(_report(results=found), page) == []
    assert cs.search_problems(_report(results=[]), page)
    assert cs.search_problems(_report(results=[{"href": "index.html", "text": "x"}]), page)
    sections = ["Parameters", "Returns", "See also", "Examples"]
    name = "connsim.effective.effective_masks"
    assert cs.api_problems(_report(ids=[name], headings=sections), name) == []
    assert cs.api_problems(_report(ids=[], headings=sections), name)
    # the words elsewhere on the page (the sidebar) do not count: only section titles do
    assert cs.api_problems(_report(ids=[name], headings=sections[:2],
                                   text=" ".join(sections)), name)


def test_the_browser_check_fails_on_a_blank_screenshot(tmp_path):
    image = pytest.importorskip("PIL.Image")
    import numpy as np
    cs = _check_site()
    blank = tmp_path / "blank.png"
    image.new("RGB", (1280, 900), "white").save(blank)
    assert cs.screenshot_problems(str(blank))
    busy = tmp_path / "busy.png"
    noise = np.random.default_rng(0).integers(0, 255, (900, 1280, 3), dtype=np.uint8)
    image.fromarray(noise).save(busy)
    assert cs.screenshot_problems(str(busy)) == []
    assert cs.screenshot_problems(str(tmp_path / "missing.png"))
