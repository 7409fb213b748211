"""Real `celery worker` processes: handlers run, transient failures retry, failures end in the DLQ."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    AUTH,
    MAX_RETRIES,
    as_jsonl,
    count_lines,
    make_record,
    take_messages,
    task_kwargs,
    wait_for,
    with_action,
)

pytestmark = pytest.mark.worker


def post(client: Any, *records: dict[str, Any]) -> None:
    """POST the records and insist they were all accepted."""
    response = client.post("/webhooks/auth0", data=as_jsonl(records), headers=AUTH)
    assert response.status_code == 202, response.json
    assert response.json["accepted"] == len(records)


def dead_lettered(broker: Any, queue: str, log_id: str) -> Any:
    """Return the DLQ message for ``log_id`` once it is there (other messages are put aside)."""
    found: dict[str, Any] = {}

    def look() -> Any:
        for message in take_messages(broker, f"{queue}.dlq"):
            found[task_kwargs(message)["log_id"]] = message
        return found.get(log_id)

    return wait_for(look, 30, 0.1, f"{log_id} in {queue}.dlq")


def test_accepted_events_are_processed_by_the_worker_of_their_queue(
    session_worker: Any, client: Any, effects_dir: Path
) -> None:
    """Each accepted event runs its handlers once in the worker consuming its queue."""
    records = [make_record(t) for t in ("s", "ss", "fp", "limit_wc")]
    post(client, *records)
    for record in records:
        wait_for(
            lambda r=record: count_lines(effects_dir, "effects.log", f"effect {r['log_id']}") == 1,  # type: ignore[misc]  # a default argument binds the loop turn's value
            what=f"effect of {record['log_id']}",
        )
    assert "auth0 event ss (Success Signup)" in session_worker.log_text()


def test_transient_failure_succeeds_on_retry(session_worker: Any, client: Any, effects_dir: Path) -> None:
    """A RetryableError on the first attempt is retried with backoff and then succeeds, once."""
    record = with_action(make_record("ss"), "fail_once")
    log_id = record["log_id"]
    post(client, record)
    wait_for(lambda: count_lines(effects_dir, "effects.log", f"effect {log_id}") == 1, what="effect")
    assert count_lines(effects_dir, "attempts.log", f"attempt {log_id}") == 2
    assert f"retrying event log_id={log_id} type=ss" in session_worker.log_text()


def test_permanent_failure_goes_to_the_dlq_without_retries(
    session_worker: Any, client: Any, broker: Any, effects_dir: Path
) -> None:
    """A PermanentError dead-letters at once: one attempt, the message in <queue>.dlq, the reason logged."""
    record = with_action(make_record("fp"), "permanent")
    log_id = record["log_id"]
    post(client, record)
    message = dead_lettered(broker, "auth0.fp", log_id)
    assert count_lines(effects_dir, "attempts.log", f"attempt {log_id}") == 1
    assert message.headers["retries"] == 0
    death = message.headers["x-death"][0]
    assert (death["reason"], death["queue"], death["count"]) == ("rejected", "auth0.fp", 1)
    assert message.decode()[0] == [record]
    log = wait_for(
        lambda: (
            session_worker.log_text()
            if f"dead-lettering event log_id={log_id}" in session_worker.log_text()
            else ""
        ),
        what="dead-letter log line",
    )
    assert (
        f"dead-lettering event log_id={log_id} type=fp task_id={message.headers['id']}: "
        "permanent error: PermanentError: user does not exist upstream" in log
    )


def test_always_failing_handler_is_dead_lettered_after_the_configured_retries(
    session_worker: Any, client: Any, broker: Any, effects_dir: Path
) -> None:
    """An always-failing handler runs 1 + AUTH0_EVENTS_MAX_RETRIES times, then lands in the DLQ."""
    record = with_action(make_record("fu"), "always_fail")
    log_id = record["log_id"]
    post(client, record)
    message = dead_lettered(broker, "auth0.fu", log_id)
    assert count_lines(effects_dir, "attempts.log", f"attempt {log_id}") == MAX_RETRIES + 1
    assert message.headers["retries"] == MAX_RETRIES
    assert message.headers["x-death"][0]["reason"] == "rejected"
    assert (
        f"gave up after {MAX_RETRIES} retries: RuntimeError: this handler always fails"
        in session_worker.log_text()
    )
