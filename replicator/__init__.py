"""replicator: event-driven, delta-efficient disaster recovery for AI data."""

from replicator._native import __version__ as native_version

__version__ = "0.1.0"
__all__ = ["__version__", "native_version"]
