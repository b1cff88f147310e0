"""The locks BobGen's processes take on files beside a SQLite database, all ``flock``s.

``flock`` and not SQLite's own POSIX locks: those belong to SQLite, and one ``close`` of any
descriptor of the database file would drop them. A ``flock`` belongs to its open file (two
databases in one process conflict like two processes) and the kernel drops it when its holder
exits or dies, so no lock outlives a crashed process.

* ``<db>.lock``, shared while a process has the database open: a restore refuses while any
  process holds it (:func:`hold_in_use_lock`, :func:`not_in_use`).
* ``<db>.write.lock``, exclusive from BEGIN to COMMIT, with ``<db>.write.lock.waiting`` for
  its hand-over: the writers of several processes take turns (:class:`WriteLock`).
* ``<db>.<job>.lock``, exclusive while a process runs a one-at-a-time job, the seed or a
  scheduled backup (:func:`job_lock`).
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from service.db.database import Distribution
from service.db.errors import DatabaseInUse

# How long a writer that just released the write lock leaves it to a waiting process.
HANDOFF_S = 0.002


def job_lock_path(db_path: Path, job: str) -> Path:
    """``<db>.<job>.lock`` beside the database: ``bobgen.db.seed.lock`` for ``bobgen.seed``."""
    return db_path.with_name(f"{db_path.name}.{job.removeprefix('bobgen.')}.lock")


@contextmanager
def job_lock(db_path: Path, job: str) -> Iterator[bool]:
    """Whether this process may run ``job`` now: an exclusive lock on :func:`job_lock_path`,
    tried without waiting and held for the block. A folder this process cannot create the
    file in is one nobody else writes either: the job is then simply this process's."""
    try:
        fd = open_lock_file(job_lock_path(db_path, job))
    except OSError:
        yield True
        return
    try:
        yield try_lock_exclusive(fd)
    finally:
        os.close(fd)  # releases the lock


def hold_in_use_lock(db_path: Path) -> int | None:
    """Mark the database as open in this process for as long as the returned descriptor is
    open: a shared ``flock`` on ``<db>.lock`` (a file of its own, never the database file,
    whose POSIX locks SQLite owns and which one ``close`` of another descriptor would drop).
    None in a folder this process cannot write (nothing could replace the database there)."""
    try:
        fd = open_lock_file(_in_use_path(db_path))
    except OSError:
        return None
    fcntl.flock(fd, fcntl.LOCK_SH)
    return fd


@contextmanager
def not_in_use(db_path: Path) -> Iterator[None]:
    """Hold the database against every BobGen process for the block, or DatabaseInUse."""
    fd = open_lock_file(_in_use_path(db_path))
    try:
        if not try_lock_exclusive(fd):
            raise DatabaseInUse(
                f"{db_path} is open in a BobGen process (a server, a worker or a command): "
                "stop it first"
            )
        yield
    finally:
        os.close(fd)


def _in_use_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".lock")


def open_lock_file(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)


def try_lock_exclusive(fd: int) -> bool:
    """Take the exclusive lock on ``fd`` if nobody holds it (shared or exclusive)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class WriteLock:
    """An exclusive ``flock`` on ``<db>.write.lock``, held by the writer thread from BEGIN to
    COMMIT, so that of several processes on one file (instances, a server's workers) one
    writes at a time without meeting SQLite's busy handler, whose back-off sleeps up to
    100 ms a try and so turned every collision into a tail-latency spike.

    A waiter polls (20 us doubling to 200 us) rather than blocking in ``flock``: a holder
    that hangs (a stopped process) still ends in ``database is locked`` after ``timeout_s``,
    as SQLite's own lock would, instead of a writer thread stuck for ever. Waiters announce
    themselves with a shared lock on ``<db>.write.lock.waiting``, and a writer that released
    the lock while someone waited gives them up to :data:`HANDOFF_S` to take it before it
    competes again: a writer with a steady stream of batches otherwise re-takes the lock
    microseconds after releasing it, and the waiter starves (p99 0.4-0.9 s for two servers
    writing to one file, before this). Opened lazily on the writer thread; a folder where
    the files cannot be created is one no other process writes to either.
    """

    def __init__(self, path: Path, timeout_s: float) -> None:
        self.path = path
        self.timeout_s = timeout_s
        self.waits = Distribution()  # contended acquisitions only: time until held
        self._fd: int | None = None
        self._waiting_fd: int | None = None
        self._unavailable = False
        self._waiter_seen = False

    def acquire(self) -> None:
        """Hold the lock, or raise ``sqlite3.OperationalError`` after ``timeout_s``."""
        if not self._open():
            return
        assert self._fd is not None
        if self._waiter_seen:
            self._waiter_seen = False
            self._let_waiter_in()
        if not try_lock_exclusive(self._fd):
            self._wait()

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            self._waiter_seen = self._someone_waits()

    def close(self) -> None:
        for fd in (self._fd, self._waiting_fd):
            if fd is not None:
                os.close(fd)
        self._fd = self._waiting_fd = None

    def _open(self) -> bool:
        if self._fd is None and not self._unavailable:
            try:
                self._fd = open_lock_file(self.path)
                self._waiting_fd = open_lock_file(self.path.with_name(self.path.name + ".waiting"))
            except OSError:
                self.close()
                self._unavailable = True
        return self._fd is not None

    def _wait(self) -> None:
        assert self._fd is not None and self._waiting_fd is not None
        started = time.perf_counter()
        deadline, pause = started + self.timeout_s, 20e-6
        fcntl.flock(self._waiting_fd, fcntl.LOCK_SH)  # "someone waits", for the holder
        try:
            while True:
                time.sleep(pause)
                if try_lock_exclusive(self._fd):
                    self.waits.observe(time.perf_counter() - started)
                    return
                if time.perf_counter() >= deadline:
                    raise sqlite3.OperationalError("database is locked")
                pause = min(pause * 2, 200e-6)
        finally:
            fcntl.flock(self._waiting_fd, fcntl.LOCK_UN)

    def _someone_waits(self) -> bool:
        assert self._waiting_fd is not None
        if not try_lock_exclusive(self._waiting_fd):  # a waiter's shared lock is on it
            return True
        fcntl.flock(self._waiting_fd, fcntl.LOCK_UN)
        return False

    def _let_waiter_in(self) -> None:
        assert self._fd is not None
        deadline = time.perf_counter() + HANDOFF_S
        while time.perf_counter() < deadline:
            if not try_lock_exclusive(self._fd):
                return  # a waiter has it: wait for it like everyone else
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            if not self._someone_waits():
                return
            time.sleep(20e-6)
