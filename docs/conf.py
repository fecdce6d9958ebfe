"""Sphinx configuration: the API reference, built from the docstrings.

    pip install ".[dev]" && sphinx-build -W -b html docs docs/_build

The package is imported as installed; from a source tree with the kernels built in place
(``python setup.py build_ext --inplace``) the tree is used instead.
"""

import glob
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if glob.glob(os.path.join(ROOT, "fastrnn", "_recurrent*.so")):
    sys.path.insert(0, ROOT)

import fastrnn  # noqa: E402

project = "fastrnn"
author = "the fastrnn authors"
copyright = "the fastrnn authors"
release = version = fastrnn.__version__

extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.viewcode"]
autodoc_default_options = {"members": True, "member-order": "bysource"}
autodoc_typehints = "none"  # the docstrings say the types, as NumPy's do
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
nitpicky = False
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_static_path = []
