"""A filesystem-backend writer that stops at a failpoint so the test can SIGKILL it.

Run as ``python -m tests.services.crash_writer ROOT FAILPOINT``. It prints
``at-failpoint`` and waits to be killed at:

- ``write``: after the first block of the object reached the temporary file;
- ``fsync``: every byte written, before the file fsync (and so before the rename).

Patching ``os.write``/``os.fsync`` here injects the crash point; the storage
itself (files, directories, rename) is the real one.
"""

from __future__ import annotations

import asyncio
import os
import stat
import sys
import time

from replicator.store.backends.fs import WRITE_BLOCK, FsBackend

KEY = "ckpt/model.safetensors"
SIZE = 3 * WRITE_BLOCK  # several blocks, so "after the first" is mid-object


def _die_here() -> None:
    print("at-failpoint", flush=True)
    time.sleep(3600)  # the parent SIGKILLs the process here


def main(root: str, failpoint: str) -> None:
    real_write, real_fsync = os.write, os.fsync

    def write(fd: int, block: bytes | memoryview) -> int:
        n = real_write(fd, block)
        if failpoint == "write":
            _die_here()
        return n

    def fsync(fd: int) -> None:
        if failpoint == "fsync" and stat.S_ISREG(os.fstat(fd).st_mode):
            _die_here()  # directory fsyncs (of new parents) pass through
        real_fsync(fd)

    os.write, os.fsync = write, fsync  # type: ignore[assignment]
    asyncio.run(FsBackend(root).put(KEY, os.urandom(SIZE)))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
