"""What every configuration table shares (``replicator.config`` assembles them)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """A table: unknown keys are refused, values never change once read."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def not_blank(value: object) -> object:
    """Refuse an empty or all-blank string before it becomes Path('.')."""
    if isinstance(value, str) and not value.strip():
        raise ValueError("must not be empty")
    return value
