"""Connections, transactions and migrations."""

from service.db.database import Database, DatabaseUnavailable

__all__ = ["Database", "DatabaseUnavailable"]
