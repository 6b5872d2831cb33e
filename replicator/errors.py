"""The exception tree. Behaviour lives on the class (as aiokafka does it):
callers branch on ``retriable`` and ``exit_code``, not on lists of types."""

from __future__ import annotations

from typing import ClassVar


class ReplicatorError(Exception):
    """Base of every error replicator raises on purpose."""

    #: Trying the same operation again may succeed.
    retriable: ClassVar[bool] = False
    #: Process exit code when this error ends a command.
    exit_code: ClassVar[int] = 1


class ConfigError(ReplicatorError):
    """Bad configuration; the message names the key."""

    exit_code = 2


class SourceUnavailableError(ConfigError):
    """The source root or bucket is missing, not a directory, or unreadable:
    checked before anything is written, never taken for "all removed"."""


class StoreError(ReplicatorError):
    """A peer (destination) storage operation failed."""


class NotFoundError(StoreError):
    """The object does not exist (404). Never retried blindly."""


class AccessDeniedError(StoreError):
    """403: an operational error, never taken for a missing object."""


class TransientStoreError(StoreError):
    """Timeouts, 5xx, throttling, connection resets."""

    retriable = True


class IntegrityError(StoreError):
    """Stored or received bytes do not match their checksum or digest."""


class IncompatibleStoreError(StoreError):
    """The peer was written with another format version or chunker."""

    exit_code = 2


class CapabilityError(StoreError):
    """The peer lacks a capability replicator needs (found at start-up)."""

    exit_code = 2


class SupersededError(ReplicatorError):
    """The origin object vanished or changed before it was read.

    Not a failure: a later event describes the newer state."""


class SourceError(ReplicatorError):
    """A source (Kafka brokers, a watched directory) cannot be reached or read."""

    retriable = True
