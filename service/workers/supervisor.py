"""The supervising parent of ``bobgen serve --workers N``.

It serves nothing itself and keeps no thread or event loop, so that forking a worker is safe
at any time: it binds the port, makes the run directory, forks the workers, restarts one that
dies and stops them all on SIGTERM. Its life:

* **Start.** Worker 0 starts alone (it migrates the database and writes the first token) and
  the others once it serves, so that no two processes migrate at once. ``READY=1`` goes to
  systemd when every worker serves. A worker that dies during this start ends the server: the
  worker printed why (a bad path, a database that will not open), and N copies of that
  failure in a restart loop would help nobody.
* **Serving.** A worker that dies is started again after a back-off (0.5 s doubling to 30 s;
  reset once a worker served for :data:`STEADY_S`), counted in
  ``bobgen_worker_restarts_total``. Each worker's listening socket is its own (bound by the
  parent just before the fork, then closed in the parent), so when a worker dies its socket
  goes with it and the kernel sends new connections to the live workers only, instead of
  queueing them for a process that is not there. A worker
  that dies before serving :data:`START_FAILURES_MAX` times in a row (a disk gone, the database
  deleted) ends the server with one line and exit code 1, not an endless loop.
* **Stop.** SIGTERM is passed on to every worker, each of which drains for the shutdown grace
  (``/readyz`` 503) and then stops; a second SIGTERM is passed on too and ends the grace.
  SIGINT (Ctrl+C) stops them at once. The parent waits for them all, bounded, kills what is
  left and removes the run directory.
* **Parent killed.** Workers poll their parent and drain and stop when it is gone (serve.py),
  so that a ``kill -9`` of the parent does not leave servers nobody supervises.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.cli.serve import bind, notify_systemd
from service.config import Config
from service.workers.shared import WorkerContext

log = logging.getLogger("service")

START_FAILURES_MAX = 3
REPORTED = 1  # a worker's exit code after it printed why it failed
RESTART_BASE_S = 0.5
RESTART_MAX_S = 30.0
STEADY_S = 30.0  # a worker that served this long starts its successor's back-off afresh
KILL_MARGIN_S = 5.0  # beyond grace + shutdown timeout, before the parent kills a worker

# serve(config, sock, context, ready) runs one worker and returns its exit code; ready() is
# called once it serves.
ServeWorker = Callable[[Config, socket.socket, WorkerContext, Callable[[], None]], int]


@dataclass(slots=True)
class _Slot:
    index: int
    pid: int | None = None
    ready: bool = False
    started_at: float = 0.0
    restart_at: float | None = None
    start_failures: int = 0  # deaths before serving, in a row
    quick_deaths: int = 0  # deaths within STEADY_S of starting, in a row: the back-off


class Supervisor:
    def __init__(self, config: Config, serve_worker: ServeWorker) -> None:
        if not hasattr(socket, "SO_REUSEPORT") or not hasattr(os, "fork"):
            raise OSError("--workers above 1 needs fork and SO_REUSEPORT (Linux); use 1 here")
        self.config = config
        self.count = config.worker_count
        self.serve_worker = serve_worker
        self.run_dir = Path(tempfile.mkdtemp(prefix="bobgen-workers-"))
        WorkerContext.prepare(self.run_dir)
        self.context = WorkerContext(self.run_dir, 0, self.count, os.getpid())
        self.slots: list[_Slot] = []
        self.announced = False
        self.stopping = False
        self.stop_deadline: float | None = None
        self.exit_code = 0
        self._signals: list[int] = []
        self.port = config.port
        self._ready_r, self._ready_w = os.pipe()
        self._wake_r, self._wake_w = os.pipe()
        self._ready_buffer = b""

    # ---- the parent's life -------------------------------------------------------------------

    def run(self) -> int:
        try:
            self._metrics_setup()
            # A busy port fails here, before anything migrates; port 0 becomes a free one.
            with bind(self.config.host, self.config.port) as probe:
                self.port = probe.getsockname()[1]
            self.slots = [_Slot(i) for i in range(self.count)]
            self._install_signals()
            self._start(self.slots[0])
            while not self._finished():
                self._wait()
                self._read_ready()
                self._handle_signals()
                self._reap()
                self._advance()
            return self.exit_code
        finally:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def _finished(self) -> bool:
        return self.stopping and all(slot.pid is None for slot in self.slots)

    def _advance(self) -> None:
        """Start what is due: the other workers once worker 0 serves, restarts after their
        back-off; announce the server once every worker serves; kill what outlived a stop."""
        now = time.monotonic()
        if self.stopping:
            if self.stop_deadline is not None and now > self.stop_deadline:
                for slot in self.slots:
                    if slot.pid is not None:
                        log.warning(
                            "worker %d (pid %d) did not stop: killing it", slot.index, slot.pid
                        )
                        _signal(slot.pid, signal.SIGKILL)
                self.stop_deadline = None
            return
        if self.slots[0].ready:
            for slot in self.slots[1:]:
                if slot.pid is None and slot.restart_at is None and not self.announced:
                    self._start(slot)
        for slot in self.slots:
            if slot.pid is None and slot.restart_at is not None and now >= slot.restart_at:
                self._start(slot)
        serving = sum(1 for slot in self.slots if slot.ready)
        self._serving.set(serving)
        if not self.announced and serving == self.count:
            self.announced = True
            from service import __version__

            log.info(
                "bobgen %s serving on http://%s:%d with %s, %d workers",
                __version__,
                self.config.host,
                self.port,
                self.config.db,
                self.count,
            )
            self.context.serving_file.touch()
            notify_systemd("READY=1")

    def _stop(self, sig: int, exit_code: int | None = None) -> None:
        if exit_code is not None:
            self.exit_code = exit_code
        if not self.stopping:
            self.stopping = True
            notify_systemd("STOPPING=1")
            config = self.config
            wait = config.shutdown_grace_s + config.shutdown_timeout_s + KILL_MARGIN_S
            if sig == signal.SIGINT:
                wait = config.shutdown_timeout_s + KILL_MARGIN_S
            self.stop_deadline = time.monotonic() + wait
        for slot in self.slots:
            slot.restart_at = None
            if slot.pid is not None:
                _signal(slot.pid, sig)

    # ---- workers -----------------------------------------------------------------------------

    def _start(self, slot: _Slot) -> None:
        slot.restart_at, slot.ready = None, False
        slot.started_at = time.monotonic()
        try:
            sock = bind(self.config.host, self.port, reuseport=True)
            sock.listen(1024)
        except OSError as exc:  # the port was taken meanwhile: as if the worker died at start
            log.error("worker %d cannot listen: %s", slot.index, exc)
            self._died(slot, REPORTED)
            return
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child; its coverage is the worker's
            self._child(slot, sock)
        sock.close()  # the worker's alone: it closes with the worker
        slot.pid = pid

    def _child(self, slot: _Slot, sock: socket.socket) -> None:
        """Become worker ``slot.index``; never returns."""
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGTERM, signal.SIGCHLD, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # until the worker's loop takes it
            for fd in (self._ready_r, self._wake_r, self._wake_w):
                os.close(fd)
            os.environ.pop("NOTIFY_SOCKET", None)  # systemd hears the parent, not a worker
            context = WorkerContext(self.run_dir, slot.index, self.count, self.context.parent_pid)
            ready_w = self._ready_w

            def ready() -> None:
                os.write(ready_w, f"{os.getpid()}\n".encode())

            code = self.serve_worker(self.config, sock, context, ready)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            log.exception("worker %d failed", slot.index)
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            slot = next((s for s in self.slots if s.pid == pid), None)
            if slot is not None:
                self._forget(pid)
                self._died(slot, os.waitstatus_to_exitcode(status))

    def _died(self, slot: _Slot, code: int) -> None:
        """``slot``'s worker is gone (or could not be started): restart it after a back-off,
        or stop the server when it cannot start at all."""
        pid, was_ready = slot.pid, slot.ready
        slot.pid, slot.ready = None, False
        if self.stopping:
            return
        how = f"signal {-code}" if code < 0 else f"exit code {code}"
        who = f"worker {slot.index}" + (f" (pid {pid})" if pid is not None else "")
        if not self.announced:
            # Exit code 1: the worker printed its one line (serve_worker); say nothing more.
            if code != REPORTED:
                log.error("%s died during start-up (%s)", who, how)
            self._stop(signal.SIGTERM, exit_code=1)
            return
        slot.start_failures = 0 if was_ready else slot.start_failures + 1
        if slot.start_failures >= START_FAILURES_MAX:
            log.error(
                "worker %d died before serving %d times in a row (last: %s): stopping the server",
                slot.index,
                slot.start_failures,
                how,
            )
            self._stop(signal.SIGTERM, exit_code=1)
            return
        lived = time.monotonic() - slot.started_at
        slot.quick_deaths = slot.quick_deaths + 1 if lived < STEADY_S else 1
        delay = min(RESTART_MAX_S, RESTART_BASE_S * 2 ** (slot.quick_deaths - 1))
        slot.restart_at = time.monotonic() + delay
        self._restarts.inc()
        log.warning("%s died (%s) after %.1f s: restarting it in %.1f s", who, how, lived, delay)

    def _forget(self, pid: int) -> None:
        """A dead worker's gauges leave the server's metrics; its counts stay in the sums."""
        from prometheus_client import multiprocess

        metrics_dir = str(self.context.metrics_dir)
        multiprocess.mark_process_dead(pid, metrics_dir)  # type: ignore[no-untyped-call]
        snapshot = self.context.snapshots_dir / f"{pid}.json"
        with contextlib.suppress(OSError):
            snapshot.rename(snapshot.with_name(f"dead-{pid}.json"))

    # ---- signals and the ready pipe ----------------------------------------------------------

    def _install_signals(self) -> None:
        os.set_blocking(self._wake_w, False)
        signal.set_wakeup_fd(self._wake_w)

        def remember(sig: int, _frame: Any) -> None:
            self._signals.append(sig)

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(sig, remember)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a closed terminal must not stop workers

    def _wait(self) -> None:
        with contextlib.suppress(InterruptedError):
            readable, _, _ = select.select([self._ready_r, self._wake_r], [], [], 0.2)
            if self._wake_r in readable:
                os.read(self._wake_r, 4096)

    def _read_ready(self) -> None:
        while True:
            readable, _, _ = select.select([self._ready_r], [], [], 0)
            if not readable:
                break
            self._ready_buffer += os.read(self._ready_r, 4096)
        *lines, self._ready_buffer = self._ready_buffer.split(b"\n")
        for line in lines:
            pid = int(line)
            for slot in self.slots:
                if slot.pid == pid:
                    slot.ready = True

    def _handle_signals(self) -> None:
        signals, self._signals = self._signals, []
        for sig in signals:
            if sig in (signal.SIGTERM, signal.SIGINT):
                if not self.stopping:
                    log.info("%s: stopping %d workers", signal.Signals(sig).name, self.count)
                self._stop(sig)

    # ---- metrics -----------------------------------------------------------------------------

    def _metrics_setup(self) -> None:
        """prometheus-client's multiprocess mode, in this process and (inherited) the workers.
        The variable is read when prometheus-client is first imported, which is why the parent
        imports nothing that imports it before this (service/cli keeps aiohttp and the app out)."""
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(self.context.metrics_dir)
        from prometheus_client import Counter, Gauge, values

        # Even if something imported prometheus-client before this.
        values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
        self._restarts = Counter(
            "bobgen_worker_restarts",
            "Workers the supervisor started again after one died (--workers).",
            registry=None,
        )
        self._serving = Gauge(
            "bobgen_workers",
            "Workers serving now (--workers; the supervisor's count).",
            registry=None,
            multiprocess_mode="max",
        )


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
