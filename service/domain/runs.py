"""Runs and their steps: the step status machine, and recording the service's own jobs.

A run is one invocation of something (a seed job, a migration, an external tool's pipeline);
its steps are the parts that can succeed or fail on their own.
"""

from __future__ import annotations

import logging
import subprocess
import uuid
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from service.domain.statemachine import final_states

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RunContext:
    """What every run records about the code and settings that produced it."""

    git_sha: str | None = None
    config_hash: str | None = None


class StepStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"


TRANSITIONS: dict[StepStatus, frozenset[StepStatus]] = {
    StepStatus.PENDING: frozenset({StepStatus.RUNNING, StepStatus.SKIPPED, StepStatus.FAILED}),
    StepStatus.RUNNING: frozenset({StepStatus.SUCCEEDED, StepStatus.FAILED}),
    StepStatus.SUCCEEDED: frozenset(),
    StepStatus.FAILED: frozenset(),
    StepStatus.SKIPPED: frozenset(),
}
INITIAL_STATUSES = frozenset({StepStatus.PENDING, StepStatus.RUNNING})
TERMINAL_STATUSES = final_states(TRANSITIONS)


RUN_STATUSES = ("empty", "running", "succeeded", "failed")


def run_status(step_statuses: list[StepStatus]) -> str:
    """A run's status, derived from its steps (never stored, so it cannot disagree)."""
    if not step_statuses:
        return "empty"
    if StepStatus.FAILED in step_statuses:
        return "failed"
    if all(s in TERMINAL_STATUSES for s in step_statuses):
        return "succeeded"
    return "running"


def new_run_id() -> str:
    return uuid.uuid4().hex


def current_git_sha(root: Path) -> str | None:
    """The commit the code runs from, when it runs from a git checkout."""
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha if len(sha) == 40 else None
