"""Shared test set-up: hypothesis profiles, and the count of elements compared with torch at the end."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

from qlib.testing import COMPARED

settings.register_profile(
    "ci",
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
# make unit-old: the second release's run, a sixth of the examples (its arithmetic differs from the
# reference's in places that targeted tests pin down; the full run is the reference's; soak runs 5,000)
settings.register_profile(
    "ci-old",
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile("dev", max_examples=50, deadline=None)
settings.register_profile(
    "soak", max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_sessionfinish(session):
    """Under pytest-xdist, each worker hands its count to the controller (pytest_testnodedown)."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["compared"] = COMPARED["elements"]


def pytest_testnodedown(node, error):
    COMPARED["elements"] += node.workeroutput.get("compared", 0)


def pytest_terminal_summary(terminalreporter):
    if COMPARED["elements"]:
        terminalreporter.write_line(f"qlib: compared {COMPARED['elements']:,} elements against torch")
