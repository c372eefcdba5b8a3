"""The embedded store backend (SQLite); see :mod:`gateway.store.sqlite.store`."""

from gateway.store.sqlite.store import SqliteStore

__all__ = ["SqliteStore"]
