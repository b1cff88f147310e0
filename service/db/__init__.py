"""Connections, transactions and migrations."""

from service.db.database import Database, DatabaseBusy, DatabaseUnavailable

__all__ = ["Database", "DatabaseBusy", "DatabaseUnavailable"]
