"""Type contract of the Rust module ``replicator._native`` (checked by stubtest).

Content-defined chunking (FastCDC 2020) fused with BLAKE3. Inputs are any
C-contiguous buffer (bytes, bytearray, memoryview, mmap); the GIL is released
for inputs of 2 KiB and more.
"""

import os
from collections.abc import Sequence
from typing import final

# collections.abc.Buffer is 3.12+; the package supports 3.11.
from typing_extensions import Buffer

__all__ = [
    "Blake3Hasher",
    "ChunkList",
    "ChunkerParams",
    "FileChangedError",
    "StreamChunker",
    "__version__",
    "blake3_digest",
    "chunk_buffer",
    "chunk_buffers",
    "chunk_file",
    "cut_only",
    "read_files",
]

__version__: str

class FileChangedError(OSError):
    """The file's size or mtime moved while ``chunk_file`` read it: the
    chunks would describe no version of it. Treat the version as superseded
    and read it again."""

@final
class ChunkerParams:
    """FastCDC 2020 parameters; a bad value raises ValueError naming it."""

    def __new__(
        cls,
        min_size: int = 16384,
        avg_size: int = 65536,
        max_size: int = 262144,
        normalization: int = 1,
        seed: int = 0,
    ) -> ChunkerParams: ...
    @property
    def min_size(self) -> int: ...
    @property
    def avg_size(self) -> int: ...
    @property
    def max_size(self) -> int: ...
    @property
    def normalization(self) -> int: ...
    @property
    def seed(self) -> int: ...
    def __eq__(self, other: object, /) -> bool: ...
    def __ne__(self, other: object, /) -> bool: ...

@final
class ChunkList:
    """Chunks in input order as packed arrays, plus the whole-input BLAKE3."""

    def __len__(self) -> int: ...
    def __getitem__(self, index: int, /) -> tuple[int, int, bytes]: ...
    @property
    def offsets(self) -> bytes:
        """Absolute offsets, little-endian uint64 each."""

    @property
    def lengths(self) -> bytes:
        """Lengths, little-endian uint32 each."""

    @property
    def digests(self) -> bytes:
        """32-byte BLAKE3 digests, concatenated."""

    @property
    def digest(self) -> bytes | None:
        """BLAKE3 of the whole input; None on a streaming batch before finish,
        or when ``whole_digest=False``."""

    @property
    def total_length(self) -> int: ...

@final
class StreamChunker:
    """Chunker for input arriving in pieces; results equal ``chunk_buffer``'s."""

    def __new__(
        cls,
        params: ChunkerParams | None = None,
        threads: int = 1,
        whole_digest: bool = True,
        previous: tuple[Sequence[int], bytes] | None = None,
        previous_tree: tuple[bytes, bytes] | None = None,
    ) -> StreamChunker:
        """``previous``: the previous version's chunk lengths and digests
        (32 bytes each, in order), cut with the same parameters: unchanged
        runs are hashed, not cut; results are the same as without.
        ``previous_tree``: that version's ``(subtrees, digest)``; taken only
        if the subtrees make the digest, they spare hashing its unchanged
        1 MiB blocks again for the whole digest (same digest as without)."""
    @property
    def position(self) -> int: ...
    @property
    def subtrees(self) -> bytes:
        """After ``finish``: the whole input's 1 MiB block chaining values,
        32 bytes each (empty for an input of at most 1 MiB)."""
    @property
    def reused_blocks(self) -> int:
        """Blocks whose previous chaining value was taken instead of hashing."""
    def feed(self, data: Buffer) -> ChunkList: ...
    def finish(self) -> ChunkList: ...

@final
class Blake3Hasher:
    """Incremental BLAKE3, shaped like hashlib's objects: the digest of all
    pieces fed equals ``blake3_digest`` of their concatenation. ``update``
    releases the GIL for pieces of 2 KiB and more; with ``threads > 1``
    pieces of 128 KiB and more are hashed on that many threads. A strided
    buffer raises BufferError."""

    def __new__(cls, data: Buffer | None = None, threads: int = 1) -> Blake3Hasher: ...
    def update(self, data: Buffer, /) -> None: ...
    def digest(self) -> bytes:
        """The digest so far; ``update`` may go on afterwards."""

    def hexdigest(self) -> str: ...
    def copy(self) -> Blake3Hasher: ...
    @property
    def count(self) -> int:
        """Bytes fed so far."""

    @property
    def digest_size(self) -> int: ...
    @property
    def name(self) -> str: ...

def chunk_buffer(
    data: Buffer,
    params: ChunkerParams | None = None,
    threads: int = 1,
    whole_digest: bool = True,
) -> ChunkList: ...
def chunk_buffers(
    datas: Sequence[Buffer], params: ChunkerParams | None = None, whole_digest: bool = True
) -> list[ChunkList]:
    """``chunk_buffer`` of each buffer, the GIL released once for all of them."""

def read_files(
    wanted: Sequence[tuple[bytes, int, int, int | None, int | None, int]],
) -> list[bytes | None]:
    """Whole files (path, size, ctime ns, mtime ns, inode, racy window ns),
    each only when provably the version described (origins/fs.py
    ``_read_whole``'s rules), else None; the GIL is released once."""

def chunk_file(
    path: str | os.PathLike[str],
    params: ChunkerParams | None = None,
    threads: int = 1,
    mmap: bool = True,
    whole_digest: bool = True,
) -> ChunkList:
    """Chunks of a regular file, mapped (``mmap=False``: read) 32 MiB at a
    time, so memory does not grow with the file. Raises FileNotFoundError,
    IsADirectoryError, OSError for anything but a regular file (a FIFO is
    refused without blocking), and FileChangedError when the file's size or
    mtime moved while it was read."""

def blake3_digest(data: Buffer, threads: int = 1) -> bytes: ...
def cut_only(data: Buffer, params: ChunkerParams | None = None) -> bytes: ...
