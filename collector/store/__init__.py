"""Storage backends behind one interface: SQLite (embedded default) and PostgreSQL."""

from .base import (
    CursorError,
    MeasurementFilter,
    Store,
    StoredMeasurement,
    StoreError,
    UnstorableError,
)


async def open_store(url: str) -> Store:
    """Open ``sqlite:///path`` or ``postgresql://...`` and bring its schema up to date."""
    # Imported here so that a SQLite deployment never needs asyncpg at import time.
    if url.startswith("sqlite:///"):
        from .sqlite import SQLiteStore

        return await SQLiteStore.open(url.removeprefix("sqlite:///"))
    if url.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStore

        return await PostgresStore.open(url)
    raise ValueError("database URL must start with sqlite:/// or postgresql://")


__all__ = [
    "CursorError",
    "MeasurementFilter",
    "Store",
    "StoreError",
    "StoredMeasurement",
    "UnstorableError",
    "open_store",
]
