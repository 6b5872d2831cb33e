"""Suite-wide ordering: the tests that need SeaweedFS run last.

On a cold machine SeaweedFS's Go build is the longest part of ``./dev test``
(docs/testing.md). ``./dev test`` starts it in the background at idle
priority, so the rest of the suite runs while it builds; the first test that
needs SeaweedFS waits for the build (and fails with its log if it failed).
Everything else keeps its collected order, so moving a test changes nothing
but when it runs.

A test needs SeaweedFS when it uses the ``seaweed_server`` fixture, directly or
through another fixture's signature, or when one of its parameters is the
string ``"seaweedfs"`` (the backends that fixtures such as ``store_kind``
resolve with ``request.getfixturevalue``).
"""

from __future__ import annotations

import pytest

from tests.services import background
from tests.services.process import ServiceError
from tests.services.seaweedfs.server import BUILD_JOB, BUILD_WHAT

SEAWEED_FIXTURE = "seaweed_server"
SEAWEED_PARAM = "seaweedfs"


def needs_seaweedfs(item: pytest.Item) -> bool:
    if SEAWEED_FIXTURE in getattr(item, "fixturenames", ()):
        return True
    callspec = getattr(item, "callspec", None)
    params = callspec.params.values() if callspec is not None else ()
    return any(isinstance(v, str) and v == SEAWEED_PARAM for v in params)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    last = [item for item in items if needs_seaweedfs(item)]
    if last:
        items[:] = [item for item in items if not needs_seaweedfs(item)] + last
    config.stash[_LAST] = len(last)


_LAST = pytest.StashKey[int]()
_WAITED = pytest.StashKey[bool]()


def pytest_report_collectionfinish(config: pytest.Config) -> str | None:
    count = config.stash.get(_LAST, 0)
    if not count:
        return None
    return f"{count} tests that need SeaweedFS run last (./dev test builds it in the background)"


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before the first SeaweedFS test: say that the session waits for the build."""
    config = item.config
    if config.stash.get(_WAITED, False) or not needs_seaweedfs(item):
        return
    config.stash[_WAITED] = True
    if not background.pending(BUILD_JOB):
        return
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    say = reporter.write_line if reporter is not None else print
    say(f"waiting for {BUILD_WHAT}, running in the background: {background.log_path(BUILD_JOB)}")
    try:
        waited = background.wait_for(BUILD_JOB, BUILD_WHAT)
    except ServiceError:
        return  # the seaweed_server fixture raises it again, for each test, with the log
    say(f"the SeaweedFS build finished after {waited:.0f} s more")
