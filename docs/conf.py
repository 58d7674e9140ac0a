"""Sphinx configuration of the connsim documentation site.

Build (from the repository root, with the ``docs`` extra installed)::

    python -m sphinx -W -b html docs docs/_build/html

Decisions are explained on the page ``docs/contributing-docs.md``.
"""

import os
import sys

from numpydoc.xref import DEFAULT_LINKS

import connsim

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "_ext"))

# the executed examples and commands draw with matplotlib: never open a window
os.environ.setdefault("MPLBACKEND", "Agg")

project = "connsim"
author = "the connsim developers"
copyright = "the connsim developers"  # noqa: A001 - the name Sphinx reads
version = release = connsim.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
    "sphinx-mathjax-offline",  # MathJax served from the site itself: no CDN needed
    "connsim_docs",  # docs/_ext: commands executed at build time, the measured-table pages
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_templates"]
templates_path = ["_templates"]

# ----------------------------------------------------------------------------------- MyST
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
myst_dmath_double_inline = True

# ------------------------------------------------------------------ API reference (autodoc)
autosummary_generate = True
autosummary_generate_overwrite = True
autosummary_imported_members = False
autodoc_typehints = "none"  # the numpydoc Parameters sections carry the types
autodoc_default_options = {"members": False}
autodoc_member_order = "bysource"
add_module_names = False

numpydoc_show_class_members = False  # class pages list their members through autodoc
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = True
# only the names aliased below become links
numpydoc_xref_ignore = "all"
# numpydoc's default aliases point builtin and NumPy names into the Python and NumPy inventories
# ("python:str"), which this site does not load: render them as plain names instead
numpydoc_xref_aliases = {word: f":obj:`{word}`" for word in DEFAULT_LINKS}
numpydoc_xref_aliases |= {
    "Architecture": "connsim.architectures.Architecture",
    "Node": "connsim.architectures.Node",
    "Quota": "connsim.quotas.Quota",
    "Measurement": "connsim.measures.Measurement",
    "Connectivity": "connsim.effective.Connectivity",
    "LayeredGraph": "connsim.graph.LayeredGraph",
    "Prediction": "connsim.theory.Prediction",
    "MonteCarlo": "connsim.montecarlo.MonteCarlo",
    "Study": "connsim.study.Study",
    "ResultsDB": "connsim.studydb.ResultsDB",
    "Dataset": "connsim.trainer.Dataset",
    "Network": "connsim.trainer.Network",
    "TrainConfig": "connsim.trainer.TrainConfig",
}
# Every function and class of the reference must have these sections (``docs/contributing-docs.md``):
# PR01/PR02 parameters documented and no unknown ones, RT01 a Returns section when it returns
# something, SA01 See Also, EX01 Examples. Members of classes (methods, properties) are rendered
# with their class but not validated: the class's docstring carries its See Also and Example.
numpydoc_validation_checks = {"PR01", "PR02", "RT01", "SA01", "EX01"}
numpydoc_validation_exclude = {r"\.[A-Z]\w*\.\w+$"}
# a class that documents its constructor arguments as its Attributes (result records) passes PR01
numpydoc_validation_overrides = {"PR01": [r"(?m)^Attributes\n-{10}$"]}

# ------------------------------------------------------------------------------- gallery
sphinx_gallery_conf = {
    "examples_dirs": os.path.join(HERE, "..", "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"plot_",
    "abort_on_example_error": True,  # an example that raises fails the build
    "only_warn_on_example_error": False,
    "within_subsection_order": "FileNameSortKey",
    "image_scrapers": ("matplotlib",),
    "reset_modules": ("matplotlib",),
    "remove_config_comments": True,
    "download_all_examples": False,
    "show_signature": False,
    "write_computation_times": False,
    "default_thumb_file": None,
}

# ------------------------------------------------------------------------------ cross-links
# No intersphinx: the NumPy, SciPy and networkx inventories are fetched over the network, and
# the site must build offline (docs/contributing-docs.md). Names from those projects render as
# plain text.

# ---------------------------------------------------------------------------------- HTML
html_theme = "pydata_sphinx_theme"
html_title = f"connsim {release}"
html_static_path = ["_static"]
html_css_files = ["connsim.css"]
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": [],
}
html_show_sourcelink = False
html_copy_source = False
