"""Sphinx configuration of the art-purifiers documentation."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

project = "art-purifiers"
author = "The art-purifiers authors"
copyright = "2026, The art-purifiers authors"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.viewcode", "myst_parser"]
# the results pages are Markdown written by ``art-purifiers report --pages``; their discussion notes are appended
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
myst_heading_anchors = 3
autodoc_member_order = "bysource"
autodoc_typehints = "description"
exclude_patterns = ["_build", "results/notes", "results/v1"]
suppress_warnings = ["myst.xref_missing"]
html_theme = "alabaster"
