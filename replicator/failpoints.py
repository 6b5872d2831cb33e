"""Named crash points for crash-consistency tests.

``REPLICATOR_FAILPOINT=<name>`` (comma-separated for several) makes the
process die with ``os._exit(137)`` when it reaches that point, exactly as a
SIGKILL would: no ``finally`` blocks, no flushing. Unset, a failpoint costs
one set lookup.
"""

from __future__ import annotations

import os

#: Exit status of a process killed by SIGKILL, so tests see the same thing.
CRASH_EXIT = 137

AFTER_PACK_PUT = "after-pack-put"
BEFORE_INDEX_PUT = "before-index-put"
BEFORE_MANIFEST_PUT = "before-manifest-put"
AFTER_MANIFEST_PUT = "after-manifest-put"
#: In a filesystem group commit: temporary files synced, none linked yet.
GROUP_COMMIT_BEFORE_LINK = "group-commit-before-link"

_ACTIVE = frozenset(
    p.strip() for p in os.environ.get("REPLICATOR_FAILPOINT", "").split(",") if p.strip()
)


def hit(name: str) -> None:
    """Die here when the failpoint ``name`` is armed."""
    if name in _ACTIVE:
        os._exit(CRASH_EXIT)
