"""Typed application keys, in a module of their own so handlers and the factory share them."""

from __future__ import annotations

from aiohttp import web

from service.config import Config
from service.db import Database
from service.metrics import Metrics
from service.runs import RunContext
from service.seeding import Seeder

CONFIG_KEY = web.AppKey("config", Config)
DB_KEY = web.AppKey("db", Database)
SEEDER_KEY = web.AppKey("seeder", Seeder)
METRICS_KEY = web.AppKey("metrics", Metrics)
STARTED_KEY = web.AppKey("started_monotonic", float)
RUN_CONTEXT_KEY = web.AppKey("run_context", RunContext)
