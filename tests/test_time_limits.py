"""The threads pool's time limits (tasks/time_limits.py): a warning at the soft limit, an exit at the hard."""

from __future__ import annotations

import logging

import pytest

from tasks.time_limits import EXIT_CODE, Watchdog


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_task_past_the_soft_limit_is_named_once_and_past_the_hard_limit_ends_the_process(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Soft limit: one WARNING naming the task; hard limit: CRITICAL, then the exit with EX_SOFTWARE."""
    clock, exits = Clock(), list[int]()
    watchdog = Watchdog(soft=5, hard=20, exit_process=exits.append, clock=clock)
    watchdog.started("task-1", "event_type=s, log_id=42")
    watchdog.started("task-2", "event_type=s, log_id=43")
    clock.now += 4
    watchdog.finished("task-2")
    with caplog.at_level(logging.WARNING, logger="tasks.time_limits"):
        watchdog.check()
        assert not caplog.records
        clock.now += 2
        watchdog.check()
        watchdog.check()
        assert [r.levelname for r in caplog.records] == ["WARNING"]
        assert "task-1 (event_type=s, log_id=42)" in caplog.records[0].getMessage()
        assert not exits
        clock.now += 14
        watchdog.check()
    assert exits == [EXIT_CODE]
    assert caplog.records[-1].levelname == "CRITICAL"
    assert "past the hard time limit of 20 s" in caplog.records[-1].getMessage()


def test_a_finished_task_is_forgotten() -> None:
    """A task that finished before the limits is never acted on."""
    clock, exits = Clock(), list[int]()
    watchdog = Watchdog(soft=5, hard=20, exit_process=exits.append, clock=clock)
    watchdog.started("task-1", "")
    watchdog.finished("task-1")
    clock.now += 60
    watchdog.check()
    assert not exits
