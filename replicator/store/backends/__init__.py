"""Storage backends behind :class:`replicator.store.backend.Backend`."""
