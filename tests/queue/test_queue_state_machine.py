"""A Hypothesis state machine drives the queue against an in-memory model on a fake clock.

After every step it checks: no job has two live leases (a pull never returns a job whose lease
is live), a done job is never leased again, a cancelled job never changes again (nothing
cancelled is ever done), attempts never exceed the maximum, and the status counts add up to the
number of jobs; and the file agrees with the model, field by field.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.from_thread
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)
from pg_helpers import PG_DSN, pg_admin

from actors.errors import LeaseLost
from actors.queue import Ack, Backoff, Job, SQLiteQueue
from supervisors.clock import FakeClock

BACKOFF = Backoff(base_seconds=2.0, cap_seconds=5.0, jitter=0.0)


@dataclass
class Model:
    """What the queue should hold for one job."""

    id: int
    tenant: str
    key: str | None
    priority: int
    max_attempts: int
    available_at: float
    status: str = "pending"
    attempts: int = 0
    token: str | None = None
    expires: float | None = None
    started: bool = False  # marked started under the current lease
    cancel_requested: bool = False  # cancelled while leased: the lease ends it cancelled

    def live(self, token: str, now: float) -> bool:
        return self.status == "leased" and self.token == token and (self.expires or 0) > now

    def renewable(self, token: str, now: float) -> bool:
        return self.live(token, now) and not self.cancel_requested


class QueueMachine(RuleBasedStateMachine):
    portal: anyio.from_thread.BlockingPortal  # set by the test before running
    backend: str  # "sqlite" or "postgres", set by the test
    pg_schema: str  # the test's PostgreSQL schema, emptied before each example

    leases = Bundle("leases")

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp())
        self.clock = FakeClock()
        opened: Any
        if self.backend == "sqlite":
            opened = SQLiteQueue.open(self.dir / "q.db", clock=self.clock, backoff=BACKOFF)
        else:
            from actors.queue.postgres._queue import PostgresQueue

            opened = PostgresQueue.open(
                PG_DSN, schema=self.pg_schema, clock=self.clock, backoff=BACKOFF, pool_size=2
            )
        self.cm = self.portal.wrap_async_context_manager(opened)
        self.queue = self.cm.__enter__()
        if self.backend == "postgres":
            pg_admin(
                f"TRUNCATE {self.pg_schema}.jobs, {self.pg_schema}.runs, "
                f"{self.pg_schema}.run_counts RESTART IDENTITY"
            )
        self.jobs: dict[int, Model] = {}
        self.ever_done: set[int] = set()
        self.ever_cancelled: set[int] = set()
        # Fair pulls (the default): the last tenant the previous pull served.
        self.cursor = ""

    def teardown(self) -> None:
        self.cm.__exit__(None, None, None)
        shutil.rmtree(self.dir, ignore_errors=True)

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return self.portal.call(lambda: fn(*args, **kwargs))

    @property
    def now(self) -> float:
        return self.clock.time()

    def model_reap(self) -> int:
        expired = [
            m for m in self.jobs.values() if m.status == "leased" and (m.expires or 0) <= self.now
        ]
        for m in expired:
            # Fair attempt accounting: a job never started gets its attempt back.
            if not m.started:
                m.attempts -= 1
            m.status = "failed" if m.started and m.attempts >= m.max_attempts else "pending"
            if m.cancel_requested:  # never pending again
                m.status = "cancelled"
                self.ever_cancelled.add(m.id)
            m.token = m.expires = None
            m.started = False
        return len(expired)

    # --- rules -------------------------------------------------------------------------------

    @rule(
        tenant=st.sampled_from(["t1", "t2"]),
        key=st.none() | st.sampled_from(["a", "b", "c"]),
        delay=st.sampled_from([0.0, 0.0, 3.0]),
        priority=st.integers(0, 2),
        max_attempts=st.integers(1, 3),
    )
    def enqueue(
        self, tenant: str, key: str | None, delay: float, priority: int, max_attempts: int
    ) -> None:
        job: Job = self.call(
            self.queue.enqueue,
            f"run-{tenant}",
            tenant,
            "obj",
            idempotency_key=key,
            delay_seconds=delay,
            priority=priority,
            max_attempts=max_attempts,
        )
        existing = [m for m in self.jobs.values() if key and (m.tenant, m.key) == (tenant, key)]
        if existing:
            assert job.id == existing[0].id
            return
        assert job.id not in self.jobs
        self.jobs[job.id] = Model(
            job.id, tenant, key, priority, max_attempts, available_at=self.now + delay
        )

    @rule(target=leases, max=st.integers(1, 4), visibility=st.sampled_from([1.0, 5.0, 10.0]))
    def pull(self, max: int, visibility: float) -> Any:
        self.model_reap()
        visible = sorted(self.fair_pick(max), key=lambda m: (-m.priority, m.available_at, m.id))
        jobs: list[Job] = self.call(self.queue.pull, max=max, visibility_seconds=visibility)
        assert [j.id for j in jobs] == [m.id for m in visible]
        for job in jobs:
            m = self.jobs[job.id]
            # Invariant: a job with a live lease is never leased again; a done job never is.
            assert not (m.status == "leased" and (m.expires or 0) > self.now)
            assert job.id not in self.ever_done
            m.status, m.attempts = "leased", m.attempts + 1
            m.token, m.expires = job.lease_token, self.now + visibility
            m.started = False
        return multiple(*[(j.id, j.lease_token) for j in jobs])

    def fair_pick(self, max: int) -> list[Model]:
        """Tenants in turns, one job each per turn, from the tenant after the cursor; each
        tenant's own jobs by priority, then age."""
        own: dict[str, list[Model]] = {}
        for m in sorted(self.jobs.values(), key=lambda m: (-m.priority, m.available_at, m.id)):
            if m.status == "pending" and m.available_at <= self.now:
                own.setdefault(m.tenant, []).append(m)
        order = sorted(own, key=lambda t: (t <= self.cursor, t))
        picked: list[Model] = []
        for turn in range(max):
            for tenant in order:
                if turn < len(own[tenant]) and len(picked) < max:
                    picked.append(own[tenant][turn])
        served = {m.tenant for m in picked}
        if served:
            self.cursor = [t for t in order if t in served][-1]
        return picked

    @rule(
        lease=leases,
        status=st.sampled_from(["done", "failed"]),
        permanent=st.booleans(),
    )
    def ack(self, lease: tuple[int, str], status: str, permanent: bool) -> None:
        job_id, token = lease
        m = self.jobs[job_id]
        ack = Ack(job_id=job_id, lease_token=token, status=status, permanent=permanent)  # type: ignore[arg-type]
        (result,) = self.call(self.queue.ack_many, [ack])
        if not m.live(token, self.now):
            duplicate = m.status == status and m.token == token
            assert (result.ok, result.reason == "duplicate") == (duplicate, duplicate)
            return
        m.expires = None
        if m.cancel_requested:
            # Whatever the ack says, a marked lease ends cancelled: refused, never done.
            assert (result.ok, result.reason) == (False, "cancelled")
            m.status = "cancelled"
            self.ever_cancelled.add(job_id)
            return
        assert result.ok and result.reason == "ok"
        if status == "done":
            m.status = "done"
            self.ever_done.add(job_id)
        elif permanent or m.attempts >= m.max_attempts:
            m.status = "failed"
        else:
            m.status, m.token, m.started = "pending", None, False
            m.available_at = self.now + min(5.0, 2.0 * 2 ** (m.attempts - 1))

    @rule(lease=leases, visibility=st.sampled_from([1.0, 5.0]))
    def renew(self, lease: tuple[int, str], visibility: float) -> None:
        job_id, token = lease
        m = self.jobs[job_id]
        live = m.renewable(token, self.now)
        try:
            self.call(self.queue.renew, job_id, token, visibility)
        except LeaseLost:
            assert not live
        else:
            assert live
            m.expires = self.now + visibility

    @rule(lease=leases, delay=st.sampled_from([0.0, 2.0]))
    def release(self, lease: tuple[int, str], delay: float) -> None:
        job_id, token = lease
        m = self.jobs[job_id]
        live = m.live(token, self.now)
        try:
            self.call(self.queue.release, job_id, token, delay)
        except LeaseLost as exc:
            assert not live or m.cancel_requested
            if live:  # a marked lease given back: cancelled, its attempt back all the same
                assert exc.reason == "cancelled"
                m.status, m.attempts, m.expires = "cancelled", m.attempts - 1, None
                m.started = False
                self.ever_cancelled.add(job_id)
        else:
            assert live
            m.status, m.attempts, m.token, m.expires = "pending", m.attempts - 1, None, None
            m.available_at = self.now + delay
            m.started = False

    @rule(lease=leases)
    def start(self, lease: tuple[int, str]) -> None:
        job_id, token = lease
        m = self.jobs[job_id]
        live = m.renewable(token, self.now)
        (result,) = self.call(self.queue.start_many, [lease])
        assert result.ok == live
        if live:
            m.started = True

    @rule(pick=st.integers(0, 30), scope=st.sampled_from([None, "t1", "t2"]))
    def cancel(self, pick: int, scope: str | None) -> None:
        if not self.jobs:
            return
        job_id = sorted(self.jobs)[pick % len(self.jobs)]
        m = self.jobs[job_id]
        (result,) = self.call(self.queue.cancel_many, [job_id], tenant_id=scope)
        if scope is not None and scope != m.tenant:
            assert (result.ok, result.reason) == (False, "not_found")
        elif m.status == "cancelled" or m.cancel_requested:
            assert (result.ok, result.reason) == (True, "duplicate")
        elif m.status in ("done", "failed"):
            assert (result.ok, result.reason) == (False, "finished")
        elif m.status == "pending":
            assert (result.ok, result.reason) == (True, "ok")
            m.status = "cancelled"
            self.ever_cancelled.add(job_id)
        else:  # leased (its lease live or expired, not reaped yet): marked
            assert (result.ok, result.reason) == (True, "ok")
            m.cancel_requested = True

    @rule()
    def reap(self) -> None:
        assert self.call(self.queue.reap) == self.model_reap()

    @rule()
    def requeue(self) -> None:
        failed = [m for m in self.jobs.values() if m.status == "failed"]
        assert self.call(self.queue.requeue) == len(failed)
        for m in failed:
            m.status, m.attempts, m.token, m.available_at = "pending", 0, None, self.now

    @rule(seconds=st.sampled_from([0.5, 1.0, 3.0, 7.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    # --- invariants ----------------------------------------------------------------------------

    @invariant()
    def the_file_agrees_with_the_model(self) -> None:
        page = self.call(self.queue.list, limit=1000)
        stored = {j.id: j for j in page.items}
        assert stored.keys() == self.jobs.keys()
        for job in stored.values():
            m = self.jobs[job.id]
            assert (job.status, job.attempts) == (m.status, m.attempts)
            assert job.attempts <= job.max_attempts == m.max_attempts
            if job.status == "leased":
                assert (job.lease_token, job.lease_expires_at) == (m.token, m.expires)
                assert (job.started_at is not None) == m.started
            if job.status == "pending":
                assert job.available_at == m.available_at
            if job.id in self.ever_done:
                assert job.status == "done"
            if job.id in self.ever_cancelled:
                assert job.status == "cancelled"
            assert (job.cancel_requested_at is not None) == (
                m.cancel_requested or m.status == "cancelled"
            )

    @invariant()
    def status_counts_add_up(self) -> None:
        stats = self.call(self.queue.stats)
        assert stats.total == len(self.jobs)
        for status in ("pending", "leased", "done", "failed", "cancelled"):
            assert getattr(stats, status) == sum(m.status == status for m in self.jobs.values())
        waiting = [m for m in self.jobs.values() if m.status == "pending"]
        assert stats.scheduled == sum(m.available_at > self.now for m in waiting)
        available = [m.available_at for m in waiting if m.available_at <= self.now]
        oldest = self.now - min(available) if available else None
        assert stats.oldest_pending_age_seconds == oldest

    @invariant()
    def each_runs_stored_counts_match_its_jobs(self) -> None:
        for tenant in ("t1", "t2"):
            mine = [m for m in self.jobs.values() if m.tenant == tenant]
            if not mine:
                continue
            summary = self.call(self.queue.run_summary, f"run-{tenant}")
            assert summary.total == len(mine)
            for status in ("pending", "leased", "done", "failed", "cancelled"):
                assert getattr(summary, status) == sum(m.status == status for m in mine)


@pytest.fixture
def portal(anyio_backend: str) -> Iterator[anyio.from_thread.BlockingPortal]:
    with anyio.from_thread.start_blocking_portal(anyio_backend) as portal:
        yield portal


# The queue's semantics against a model, the same on both runtimes: asyncio only (see
# tests/conftest.py).
@pytest.mark.runtimes("asyncio")
def test_the_queue_behaves_like_its_model(
    portal: anyio.from_thread.BlockingPortal, backend: str, request: pytest.FixtureRequest
) -> None:
    QueueMachine.portal = portal
    QueueMachine.backend = backend
    if backend == "postgres":
        QueueMachine.pg_schema = request.getfixturevalue("pg_schema")
    # A fraction of the profile's count (150 in CI: 60 and 12): each example runs 40 steps on a
    # real queue, and on PostgreSQL each step is a network round trip; SQLite explores more.
    examples = max(1, settings().max_examples * 2 // (5 if backend == "sqlite" else 25))
    run_state_machine_as_test(
        QueueMachine,
        settings=settings(max_examples=examples, stateful_step_count=40, deadline=None),
    )
