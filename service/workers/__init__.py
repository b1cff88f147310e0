"""``bobgen serve --workers N``: N processes serving one port, kept by a supervising parent.

The parent (:mod:`service.workers.supervisor`) binds the port once per worker with
``SO_REUSEPORT`` (the kernel spreads new connections over the workers' sockets), makes a fresh
run directory, forks the workers and restarts one that dies. Each worker is a whole
``bobgen serve``: its own event loop, readers, writer thread or pool. What they share lives in
the run directory (:class:`WorkerContext`): prometheus-client's multiprocess files and each
worker's snapshot of its other metrics (so that ``/metrics`` is the server's), and the lock
files that elect one worker for the jobs that must run once per server (the documents watcher,
WAL checkpoints). The seed and scheduled backups already run once per database
(``Database.exclusive``). docs/scale-out.md says what an operator sees.
"""

from service.workers.shared import Leadership, WorkerContext

__all__ = ["Leadership", "WorkerContext"]
