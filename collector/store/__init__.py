"""Storage backends behind one interface: SQLite (embedded default) and PostgreSQL."""

from .base import (
    BLOCKING_VALUES,
    CursorError,
    MeasurementFilter,
    Store,
    StoredMeasurement,
    StoreError,
    UnstorableError,
    open_store,
)

__all__ = [
    "BLOCKING_VALUES",
    "CursorError",
    "MeasurementFilter",
    "Store",
    "StoreError",
    "StoredMeasurement",
    "UnstorableError",
    "open_store",
]
