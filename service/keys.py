"""Typed application keys, in a module of their own so handlers and the factory share them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from service.config import Config
from service.db import Database
from service.domain.runs import RunContext
from service.timeutil import Clock

if TYPE_CHECKING:  # keys carry no weight: handlers need not import seeding or prometheus
    from service.documents.files import FileView
    from service.documents.watcher import DocumentWatcher
    from service.jobs.backups import BackupSchedule
    from service.jobs.seeding import Seeder
    from service.metrics import Metrics
    from service.workers import WorkerContext

CONFIG_KEY = web.AppKey("config", Config)
DB_KEY = web.AppKey("db", Database)
SEEDER_KEY: web.AppKey[Seeder] = web.AppKey("seeder")
METRICS_KEY: web.AppKey[Metrics] = web.AppKey("metrics")
STARTED_KEY = web.AppKey("started_monotonic", float)
RUN_CONTEXT_KEY = web.AppKey("run_context", RunContext)
DOCUMENTS_KEY: web.AppKey[DocumentWatcher | None] = web.AppKey("documents")
BACKUPS_KEY: web.AppKey[BackupSchedule | None] = web.AppKey("backups")
DOCUMENT_FILES_KEY: web.AppKey[FileView | None] = web.AppKey("document_files")
CLOCK_KEY = web.AppKey("clock", Clock)
WORKER_KEY: web.AppKey[WorkerContext | None] = web.AppKey("worker")  # None: one process
REQUEST_ID_KEY = web.RequestKey("request_id", str)  # service/requestcontext.py


@dataclass(slots=True)
class Lifecycle:
    """What probes report: set by the app's start-up and shutdown, read per request."""

    stopping: bool = False
    exiting: bool = False  # past the drain: the loop is leaving
    db_up: bool = True  # the last database check (probe loop or /readyz) succeeded


LIFECYCLE_KEY = web.AppKey("lifecycle", Lifecycle)
