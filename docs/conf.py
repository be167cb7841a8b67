"""Sphinx configuration of the pytest-lxdsnap docs (`make docs`)."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE / "_ext"))

from pytest_lxdsnap import __version__  # noqa: E402 - after the path above

project = "pytest-lxdsnap"
author = "the pytest-lxdsnap authors"
copyright = "the pytest-lxdsnap authors, Apache-2.0"
release = __version__
version = ".".join(__version__.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinxarg.ext",
    "lxdsnap_docs",
]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

html_theme = "furo"
html_title = f"pytest-lxdsnap {release}"
html_static_path = ["_static"]
html_css_files = ["lxdsnap.css"]
html_show_sourcelink = False

# autodoc: the documented objects are imported from the installed package.
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_default_options = {"show-inheritance": True}

# Nitpicky (-n): every cross reference must resolve. There is no network here or in CI, so intersphinx
# cannot fetch the inventories of Python, pytest or pylxd: their types are named, not linked.
nitpicky = True
nitpick_ignore_regex = [
    ("py:class", r"(str|int|float|bool|bytes|object|None|Exception|KeyError|tuple|dict|list)"),
    ("py:class", r"(collections\.abc|typing)\.\w+"),
    ("py:class", r"(Sequence|Mapping|Iterable|Iterator)"),
    ("py:class", r"(pylxd|pytest|_pytest|pluggy)(\.\w+)*"),
    ("py:class", r"Instance|Client"),
    ("py:class", r"pytest_lxdsnap\.lxd\.ports\.WrappedInstance"),
    ("py:class", r"pytest_lxdsnap\.declarations\.ContainerSpec"),
    ("py:class", r"pytest_lxdsnap\.lxd\.connection\.Endpoint"),
    ("py:class", r"(pathlib\.)?Path|Any|Host|testinfra(\.\w+)*"),
]

# MyST asks every domain to resolve its links; sphinx-argparse's domain cannot and says so for each one.
suppress_warnings = ["myst.domains"]
smartquotes = False  # "--lxd-reuse" stays two hyphens, quotes stay straight
