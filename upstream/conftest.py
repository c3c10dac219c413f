"""
Test-session options for running ART's tests from its release archive, offline.

ART's release archive ships its tests but not the repository's root ``conftest.py``, which defines the
``--framework`` option, the ``framework`` and ``art_warning`` fixtures and the meaning of ART's test markers (and
imports TensorFlow at start-up). This file provides those pieces, for PyTorch only, so that the selected test files
run as ART's CI runs them with ``--framework=pytorch``; ``tox -e upstream`` places it at the root of the unpacked tree.
It is written for this check and is not part of the patches.
"""

import importlib.util

import pytest

DEEP_LEARNING_FRAMEWORKS = ("tensorflow", "tensorflow2", "keras", "kerastf", "pytorch", "jax", "huggingface")
OTHER_FRAMEWORKS = ("scikitlearn",)


def pytest_addoption(parser):
    parser.addoption("--framework", action="store", default="pytorch", help="Only 'pytorch' is supported here.")


def pytest_configure(config):
    if config.getoption("--framework") != "pytorch":
        raise pytest.UsageError("This offline conftest supports --framework=pytorch only.")


@pytest.fixture(scope="session")
def framework(request):
    return request.config.getoption("--framework")


@pytest.fixture
def art_warning(request):
    """ART's tests report an unavailable fixture through this; a test that runs once must not end that way."""

    def _art_warning(exception):
        once = request.node.get_closest_marker("framework_agnostic") or request.node.get_closest_marker(
            "only_with_platform"
        )
        if once:
            raise AssertionError(f"{request.node.nodeid} could not run: {exception}") from exception

    return _art_warning


@pytest.fixture(autouse=True)
def _markers(request, framework):
    """The test markers ART registers: only_with_platform, skip_framework and skip_module."""
    only = request.node.get_closest_marker("only_with_platform")
    if only and framework not in only.args:
        pytest.skip(f"only with {only.args}")
    skip = request.node.get_closest_marker("skip_framework")
    if skip:
        names = set(skip.args)
        names |= set(DEEP_LEARNING_FRAMEWORKS) if "dl_frameworks" in names else set()
        names |= set(OTHER_FRAMEWORKS) if "non_dl_frameworks" in names else set()
        if framework in names:
            pytest.skip(f"skipped for {framework}")
    modules = request.node.get_closest_marker("skip_module")
    for module in modules.args if modules else ():
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed")
