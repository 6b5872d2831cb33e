"""Backfill's commit step: an object's manifests, once its packs are durable.

A worker that has read an object hands it here and moves on to the next
one: a commit task waits for the packs the object's chunks went into
(chunks durable), then writes its manifest at each peer through that
peer's group commit (manifest durable), then reports the object. A reader
slot is never held waiting for a pack to fill.

Memory: at most ``limit`` objects wait for their packs. Reaching it seals
every open pack of the budget's writers: the waiting objects can only
finish once the packs they wait for are durable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from replicator._native import ChunkerParams
from replicator.pipeline.durable import SealBudget, pack_names
from replicator.pipeline.ship import Shipped
from replicator.pipeline.targets import Target, Targets
from replicator.store.format import SourceIdentity

#: An object read and placed, waiting for its manifests: who it is, where its chunks went.
Placed = tuple[SourceIdentity, Shipped]


class Commits:
    """The run's commit tasks and the slots that bound them."""

    def __init__(self, targets: Targets, params: ChunkerParams, limit: int) -> None:
        self.targets = targets
        self.params = params
        self.limit = limit
        #: When open packs seal (on count only: a backfill's packs fill).
        self.budget = SealBudget([], limit)
        self._tasks: set[asyncio.Task[None]] = set()
        #: Objects waiting for their packs, and a signal each time some finish.
        self._waiting = 0
        self._freed = asyncio.Event()

    def start(self) -> None:
        """Once the targets are open: their writers join the seal budget."""
        self.budget = SealBudget([t.writer for t in self.targets.all], self.limit)

    async def finish(self) -> None:
        """Seal every open pack and wait for every commit task."""
        await self.budget.flush_all()
        await asyncio.gather(*self._tasks)

    async def one(self, item: Placed, targets: list[Target], *, report: bool = True) -> None:
        """Commit one object in a task of its own (``report``: count its outcome)."""
        await self._take_slots(1)
        self._spawn(self._commit(item, targets, report))

    async def many(self, items: list[Placed], targets: list[Target]) -> None:
        """Commit a batch of small objects lacked by the same peers, in one task."""
        await self._take_slots(len(items))
        self._spawn(self._commit_group(items, targets))

    async def _take_slots(self, n: int) -> None:
        """Room for ``n`` more waiting objects, taken all at once (workers
        each holding part of what they need would wait on one another
        forever). Without room, every open pack is sealed first."""
        while self._waiting + n > self.limit:
            self._freed.clear()
            await self.budget.flush_all()
            if self._waiting + n > self.limit:
                await self._freed.wait()
        self._waiting += n

    def _free_slots(self, n: int) -> None:
        self._waiting -= n
        self._freed.set()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _commit(self, item: Placed, targets: list[Target], report: bool) -> None:
        ident, shipped = item
        outcome = "replicated"
        try:
            places = [shipped.placements[t.name] for t in targets]
            try:
                names: list[Any] = list(await self.budget.wait_placed(places))
            except Exception:  # find out which peer's pack failed
                names = await asyncio.gather(
                    *(pack_names(p) for p in places), return_exceptions=True
                )
            done = await asyncio.gather(
                *(self._at(t, item, packs) for t, packs in zip(targets, names, strict=True))
            )
            outcome = "replicated" if any(done) else "error"
        except Exception as exc:  # reported per object; the run goes on
            self.targets.summary.error(f"{ident.key!r}: {type(exc).__name__}: {exc}")
            outcome = "error"
        finally:
            self._free_slots(1)
        if report:
            self.targets.done(outcome, ident.size)

    async def _at(self, t: Target, item: Placed, packs: Any) -> bool:
        """Write the manifest at one peer; False when that peer failed."""
        ident, shipped = item
        try:
            if isinstance(packs, BaseException):
                raise packs
            written = await t.manifests.put(shipped.manifest(ident, self.params, t.name, packs))
        except Exception as exc:
            if self.targets.failed_at(t, exc) is not None:
                raise
            return False
        self.targets.summary.bump(self.targets.summary.manifests, t.name, int(written))
        return True

    async def _commit_group(self, items: list[Placed], targets: list[Target]) -> None:
        """``_commit`` of a batch's objects at once: one task, and each
        peer's manifests handed to its group commit together."""
        try:
            ok = [False] * len(items)
            errors: dict[int, str] = {}
            await asyncio.gather(*(self._many_at(t, items, ok, errors) for t in targets))
        finally:
            self._free_slots(len(items))
        for i, (ident, _) in enumerate(items):
            if i in errors:
                self.targets.summary.error(f"{ident.key!r}: {errors[i]}")
            self.targets.done("replicated" if ok[i] and i not in errors else "error", ident.size)

    async def _many_at(
        self, t: Target, items: list[Placed], ok: list[bool], errors: dict[int, str]
    ) -> None:
        """Write a batch's manifests at one peer; ``ok``/``errors`` per object."""
        manifests, which = [], []
        for i, (ident, shipped) in enumerate(items):
            try:
                names = await pack_names(shipped.placements[t.name])
            except Exception as exc:  # its pack failed
                self._failed(t, i, exc, errors)
                continue
            manifests.append(shipped.manifest(ident, self.params, t.name, names))
            which.append(i)
        for i, answer in zip(which, await t.manifests.put_many(manifests), strict=True):
            if isinstance(answer, BaseException):
                self._failed(t, i, answer, errors)
            else:
                ok[i] = True
                self.targets.summary.bump(self.targets.summary.manifests, t.name, int(answer))

    def _failed(self, t: Target, i: int, exc: BaseException, errors: dict[int, str]) -> None:
        if (why := self.targets.failed_at(t, exc)) is not None:
            errors[i] = why
