"""An independent reader of a peer's manifests, in either layout.

Written from docs/store-format.md (§6 for format 1/2: one object per
manifest under ``manifests/``; §13 for format 3: segments), not from
replicator's ManifestStore, so the tests that use it check what the writer
stored rather than what replicator's own reader makes of it. Only the
manifest bytes' parser (``Manifest.from_bytes``) and the v2 name parser are
shared with replicator: both are fixed by the format itself.
"""

from __future__ import annotations

import json

from replicator._native import blake3_digest
from replicator.store.backend import Backend
from replicator.store.format import MANIFESTS, Manifest, parse_manifest_key

SEGMENTS = "segments/"


async def segment_manifests(backend: Backend) -> dict[str, dict[str, Manifest]]:
    """key -> version name -> manifest, from every segment (§13: a 32-byte
    preamble with the header's length, the header, the entries after it)."""
    out: dict[str, dict[str, Manifest]] = {}
    async for info in backend.list(SEGMENTS):
        data = await backend.get(info.key)
        assert blake3_digest(data).hex() == info.key.rsplit("/", 1)[1], info.key
        length = int(data[21:31])
        header = json.loads(data[32 : 32 + length])
        body = 32 + length + 1
        for key, version, offset, n, digest in header["entries"]:
            entry = data[body + offset : body + offset + n]
            assert blake3_digest(entry).hex() == digest
            m = Manifest.from_bytes(entry)
            assert (m.identity.key, m.version_name) == (key, version)
            seen = out.setdefault(key, {}).setdefault(version, m)
            assert seen.to_bytes() == entry, "one version, two different bytes"
    return out


async def object_manifests(backend: Backend) -> dict[str, dict[str, Manifest]]:
    """key -> version name -> manifest, from the one-object-per-manifest
    layout of format 1/2 (§6: ``manifests/<bucket>/<key>/<version name>``)."""
    out: dict[str, dict[str, Manifest]] = {}
    async for info in backend.list(MANIFESTS):
        _, key, version = parse_manifest_key(info.key)
        out.setdefault(key, {})[version] = Manifest.from_bytes(await backend.get(info.key))
    return out


async def manifests_by_key(backend: Backend) -> dict[str, list[Manifest]]:
    """Every manifest at a peer of either layout, by object key, oldest first
    (version names order versions: §6.2). A peer holds one layout; reading
    both costs one empty listing and would also show a mixed store whole."""
    found = await object_manifests(backend)
    for key, versions in (await segment_manifests(backend)).items():
        held = found.setdefault(key, {})
        for version, m in versions.items():
            if version in held:
                assert held[version].to_bytes() == m.to_bytes(), f"{key!r} {version} differs"
            held[version] = m
    return {key: [v[name] for name in sorted(v)] for key, v in found.items()}


async def layout_objects(backend: Backend) -> int:
    """How many manifest-holding objects a peer has (manifests or segments)."""
    return len([i async for i in backend.list(MANIFESTS)]) + len(
        [i async for i in backend.list(SEGMENTS)]
    )
