"""The remembered answer of a filesystem peer's start-up probe.

The probe (``FsBackend.probe``) writes, links and fsyncs three files on
every run that opens the peer for writing: ~5-10 ms of a re-run that then
writes nothing. Its answer depends only on this code and on the filesystem
the peer's root directory lives on, so it is kept in the local cache
directory (``store.cache_dir``, one file per peer, beside its index cache)
together with what identifies that filesystem and directory: the device,
the root's inode, mode, owner and inode flags (``chattr +i``), the mount's
id and flags (read-only). Any difference, a record older than
``MAX_AGE_SECONDS``, another version of replicator, or a record that
cannot be read means the probe runs again. Only a passing answer is
remembered: a failing probe raises and is tried again on the next run.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

import replicator
from replicator.store.backend import Capabilities

#: A remembered answer is probed again after this long, changed or not.
MAX_AGE_SECONDS = 24 * 3600.0
#: The layout of the record; another one is not trusted.
LAYOUT = 1
#: ioctl FS_IOC_GETFLAGS (_IOR('f', 1, long)): the inode flags (immutable, append-only).
_FS_IOC_GETFLAGS = 0x80086601


def record_path(cache: Path) -> Path:
    """The probe record of the peer whose index cache is ``cache``."""
    return cache.with_suffix(".probe.json")


def fingerprint(root: Path) -> list[Any]:
    """What the probe's answer depends on, besides the code."""
    st = os.stat(root)
    vfs = os.statvfs(root)
    return [
        LAYOUT,
        replicator.__version__,
        str(root),
        st.st_dev,
        st.st_ino,
        st.st_mode,
        st.st_uid,
        st.st_gid,
        _inode_flags(root),
        vfs.f_fsid,
        vfs.f_flag,
    ]


def _inode_flags(root: Path) -> int:
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        buf = bytearray(8)
        fcntl.ioctl(fd, _FS_IOC_GETFLAGS, buf, True)
        return int.from_bytes(buf[:4], "little")
    except OSError:
        return -1  # a filesystem without inode flags: nothing there to change
    finally:
        os.close(fd)


def recall(record: Path | None, root: Path) -> tuple[Capabilities | None, list[Any] | None]:
    """The answer remembered for ``root`` as it is now (None: probe), and
    its fingerprint to remember a new answer under (None: remember none)."""
    if record is None:
        return None, None
    try:
        seen = fingerprint(root)
    except OSError:
        return None, None  # not identifiable: probe, remember nothing
    return remembered(record, seen), seen


def remembered(record: Path, seen: list[Any]) -> Capabilities | None:
    """The remembered answer, if it was found on exactly this ``seen``."""
    try:
        data = json.loads(record.read_bytes())
        if data["fingerprint"] != seen or not 0 <= time.time() - data["at"] < MAX_AGE_SECONDS:
            return None
        caps = data["capabilities"]
        return Capabilities(
            put_if_absent=bool(caps["put_if_absent"]),
            checksum_algorithms=tuple(caps["checksum_algorithms"]),
            verifies_checksums=bool(caps["verifies_checksums"]),
            ranged_upload_part_copy=bool(caps["ranged_upload_part_copy"]),
            verified_algorithms=tuple(caps["verified_algorithms"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None  # none yet, or unreadable: probe again


def remember(record: Path | None, seen: list[Any] | None, caps: Capabilities) -> None:
    """Keep a passing ``caps`` for the next run; best effort (a cache: a
    record lost or torn by a crash only means the next run probes again)."""
    if record is None or seen is None or not caps.put_if_absent:
        return
    text = json.dumps(
        {
            "fingerprint": seen,
            "at": time.time(),
            "capabilities": {
                "put_if_absent": caps.put_if_absent,
                "checksum_algorithms": list(caps.checksum_algorithms),
                "verifies_checksums": caps.verifies_checksums,
                "ranged_upload_part_copy": caps.ranged_upload_part_copy,
                "verified_algorithms": list(caps.verified_algorithms),
            },
        }
    )
    tmp = record.with_name(f"{record.name}.{os.getpid()}.tmp")
    with contextlib.suppress(OSError):
        record.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text)
        os.replace(tmp, record)
    with contextlib.suppress(OSError):
        tmp.unlink(missing_ok=True)
