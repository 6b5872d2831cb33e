"""The pipeline: read origin bytes, chunk, plan per peer, ship, commit.

Rooms, in flow order: ``windows`` (origin bytes -> chunk batches),
``ship`` (batches -> placements at each peer, through the pack writers),
``commit`` (placements -> manifests, once their packs are durable),
``reconcile`` (what a peer already holds; tombstones for removed keys),
``backfill`` (the whole flow for every object of a listing).
"""
