"""Sphinx configuration of the tnborn documentation.

Build (from the repository root, offline, warnings are errors)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

or ``make -C docs html``. Set ``TNBORN_DOCS_INTERSPHINX=1`` to link to the
quimb, torch, numpy and Python documentation (needs network access), and
``TNBORN_DOCS_SKIP_GALLERY=1`` to build without running the examples.

The API reference is generated at build time by the local extension
``_ext/tnborn_docs.py``: it walks every public module of ``tnborn`` (no path
component starting with ``_``) and writes one page per module listing the
names of its ``__all__``; autosummary then writes one page per name. A new
module or a new name in an ``__all__`` appears without editing anything here.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))  # build from a checkout without installing
sys.path.insert(0, str(DOCS / "_ext"))

os.environ.setdefault("TNBORN_NUM_THREADS", "2")
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

import tnborn  # noqa: E402

# -- project ------------------------------------------------------------------
project = "tnborn"
author = "the tnborn developers"
copyright = "the tnborn developers"
release = tnborn.__version__
version = ".".join(release.split(".")[:2])

# -- extensions ---------------------------------------------------------------
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_parser",
    "sphinx_copybutton",
    "tnborn_docs",  # _ext/tnborn_docs.py: API pages, conditional text, CLI help
]

# Run the examples of the gallery (TNBORN_DOCS_SKIP_GALLERY=1: show their code only).
_GALLERY = os.environ.get("TNBORN_DOCS_SKIP_GALLERY", "0") != "1"
tnborn_gallery = _GALLERY  # the "build.gallery" condition of the pages
extensions.append("sphinx_gallery.gen_gallery")

_INTERSPHINX = os.environ.get("TNBORN_DOCS_INTERSPHINX", "0") == "1"
if _INTERSPHINX:
    # Only with network access: offline, each failed inventory fetch is a
    # warning, and the build runs with warnings as errors.
    extensions.append("sphinx.ext.intersphinx")
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "numpy": ("https://numpy.org/doc/stable/", None),
        "torch": ("https://docs.pytorch.org/docs/stable/", None),
        "quimb": ("https://quimb.readthedocs.io/en/latest/", None),
        "matplotlib": ("https://matplotlib.org/stable/", None),
    }
    intersphinx_timeout = 10

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "auto_examples/*.ipynb",
                    "auto_examples/*.py", "auto_examples/*.zip", "auto_examples/*.json",
                    "auto_examples/*.md5", "auto_examples/*.codeobj.json"]
templates_path = ["_templates"]
suppress_warnings = [
    # pages included from outside docs/ (CHANGELOG.md) may start at any heading level
    "myst.header",
]

# -- MyST ---------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# -- autodoc / autosummary / napoleon -----------------------------------------
autosummary_generate = True
autosummary_ignore_module_all = False  # document exactly the names of __all__
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
autodoc_class_signature = "mixed"
autodoc_preserve_defaults = True
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_use_ivar = True
napoleon_attr_annotations = True
add_module_names = False
python_maximum_signature_line_length = 88

# -- HTML ---------------------------------------------------------------------
html_theme = "furo"
html_title = f"tnborn {release}"
html_static_path = ["_static"]
html_css_files = ["tnborn.css"]
html_show_sourcelink = False
copybutton_prompt_text = r">>> |\.\.\. |\$ "
copybutton_prompt_is_regexp = True

# -- sphinx-gallery -----------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": [str(ROOT / "examples" / "gallery")],
    "gallery_dirs": ["auto_examples"],
    "filename_pattern": r".*\.py$",  # execute every example
    "ignore_pattern": r"(__init__|_helpers?)\.py$",
    # the pyplot-free figures of tnborn.plotting, then pyplot's figures
    "image_scrapers": ("tnborn_docs.figure_scraper", "matplotlib"),
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
    "abort_on_example_error": False,
    "only_warn_on_example_error": False,
    "show_memory": False,
    "min_reported_time": 1,
    "capture_repr": ("_repr_html_", "__repr__"),
    "matplotlib_animations": False,
    "plot_gallery": str(_GALLERY),
    "reset_modules": ("matplotlib",),
}
