"""The queue contract (`actors.queue.base.Queue`), checked on every backend.

mypy checks each backend class against the Protocol (each backend module assigns its class to
a `_contract: type[Queue]` or `type[OwnedQueue]`); the first tests check the same at run time:
every verb of the contract exists on each backend with the contract's parameters (names,
kinds, annotations, defaults). The rest is the contract's behaviour, verb by verb, as one suite
run on SQLite, PostgreSQL and the HTTP client against a real server.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from pg_helpers import PG_DSN

from actors.bounds import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    MAX_PULL,
    MAX_PULL_WAIT_SECONDS,
    MAX_VISIBILITY_SECONDS,
)
from actors.config import (
    Config,
    HttpConfig,
    PipelineConfig,
    QueueConfig,
    Secret,
    Secrets,
    StorageConfig,
)
from actors.cron import tick_text
from actors.errors import (
    InvalidArgument,
    JobNotFound,
    LeaseLost,
    OutOfRange,
    PayloadTooLarge,
    QueueClosed,
    RunNotFound,
    ScheduleNotFound,
)
from actors.queue import (
    Ack,
    Backoff,
    Job,
    NewJob,
    NewSchedule,
    OwnedQueue,
    Queue,
    SQLiteQueue,
    Throughput,
)
from actors.queue.http import HttpQueue
from actors.queue.model import ImportedJob
from actors.queue.postgres._queue import PostgresQueue
from actors.system import ActorSystem
from supervisors.clock import FakeClock


def verbs(protocol: type) -> dict[str, Callable[..., Any]]:
    """The verbs ``protocol`` declares, its bases' included (no verb starts with ``_``; what
    typing.Protocol adds does)."""
    found: dict[str, Callable[..., Any]] = {}
    for cls in reversed(protocol.__mro__):
        if cls is object or not getattr(cls, "_is_protocol", False):
            continue
        for name, value in vars(cls).items():
            if not name.startswith("_") and callable(value):
                found[name] = value
    return found


def test_the_contract_names_every_shared_verb() -> None:
    assert set(verbs(Queue)) == {
        "aclose",
        "enqueue",
        "enqueue_many",
        "on_enqueue",
        "pull",
        "start_many",
        "renew",
        "renew_many",
        "release",
        "release_many",
        "ack",
        "ack_many",
        "ack_ids",
        "cancel_many",
        "cancel_run",
        "on_cancel",
        "reap",
        "requeue",
        "purge",
        "pause",
        "resume",
        "set_tenant_limits",
        "controls",
        "get",
        "stats",
        "run_summary",
        "list",
        "create_schedule",
        "delete_schedule",
        "list_schedules",
    }
    assert set(verbs(OwnedQueue)) - set(verbs(Queue)) == {
        "claim_maintenance",
        "list_runs",
        "fire_schedules",
        "throughput",
        "import_jobs",
        "find_by_origin",
        "delete_imported",
    }


# HttpQueue's ack_ids may leave out ``owner``: the server knows the owner from the token.
_LOOSER_DEFAULTS = {(HttpQueue, "ack_ids", "owner")}


@pytest.mark.parametrize(
    ("backend", "protocol"),
    [(SQLiteQueue, OwnedQueue), (PostgresQueue, OwnedQueue), (HttpQueue, Queue)],
    ids=["sqlite", "postgres", "http"],
)
def test_every_backend_has_every_verb_with_the_contracts_parameters(
    backend: type, protocol: type
) -> None:
    for name, declared in verbs(protocol).items():
        implemented = getattr(backend, name, None)
        assert implemented is not None, f"{backend.__name__} has no {name}"
        assert inspect.iscoroutinefunction(implemented) == inspect.iscoroutinefunction(declared), (
            f"{backend.__name__}.{name} and the contract disagree on being async"
        )
        want = inspect.signature(declared)
        got = inspect.signature(implemented)
        assert list(got.parameters) == list(want.parameters), f"{backend.__name__}.{name}"
        for param in want.parameters.values():
            have = got.parameters[param.name]
            where = f"{backend.__name__}.{name}({param.name})"
            assert have.kind == param.kind, where
            assert have.annotation == param.annotation, where
            if (backend, name, param.name) not in _LOOSER_DEFAULTS:
                assert have.default == param.default, where
        assert got.return_annotation == want.return_annotation, f"{backend.__name__}.{name}"


@pytest.mark.parametrize(
    ("backend", "protocol"),
    [(SQLiteQueue, OwnedQueue), (PostgresQueue, OwnedQueue), (HttpQueue, Queue)],
    ids=["sqlite", "postgres", "http"],
)
def test_each_backend_class_is_a_structural_instance_of_its_protocol(
    backend: type, protocol: type
) -> None:
    assert issubclass(backend, protocol)
    # The assignment mypy checks verb by verb, in the backend's own module:
    # `_contract: type[OwnedQueue] = SQLiteQueue`.
    module = importlib.import_module(backend.__module__)
    assert module._contract is backend
    assert module.__annotations__["_contract"] == f"type[{protocol.__name__}]"


@pytest.mark.anyio
@pytest.mark.runtimes("asyncio", "trio")
async def test_an_open_queue_of_each_backend_is_the_contract(contract: Contract) -> None:
    assert isinstance(contract.queue, Queue)
    # Opened here, on its own storage (SQLite, PostgreSQL), or a client of a server (HTTP).
    assert isinstance(contract.queue, OwnedQueue) == (contract.backend != "http")


@pytest.mark.anyio
@pytest.mark.runtimes("asyncio", "trio")
async def test_an_http_queue_is_the_contract_but_owns_no_storage() -> None:
    async with HttpQueue.open("http://127.0.0.1:9", None) as queue:
        assert isinstance(queue, Queue)
        assert not isinstance(queue, OwnedQueue)


# --- the behaviour every backend keeps: one suite, run on each ----------------------------------
#
# Like River's shared driver test suite: `contract` opens a fresh queue of each backend (a SQLite
# file, a PostgreSQL schema, and `HttpQueue` talking over a real socket to an in-process server
# whose SQLite queue runs on the same fake clock), and every test below runs on all three. A
# result item over HTTP carries the job's status only, so the tests read jobs back with `get`.

# The verbs' semantics, the same on both runtimes: asyncio only (see tests/conftest.py); opening,
# closing and the enqueue callback keep their trio leg.
pytestmark = pytest.mark.runtimes("asyncio")

ADMIN = "admin-token-0123456789"
T, RUN = "t1", "r1"


class Contract:
    """A queue of one backend, the clock it runs on, and whether it owns its storage."""

    def __init__(
        self, queue: Queue, clock: FakeClock, backend: str, waiting: Callable[[], int]
    ) -> None:
        self.queue = queue
        self.clock = clock
        self.backend = backend
        #: How many pulls wait for a job now (the queue's, or the server's for HTTP).
        self.waiting = waiting
        # An owned queue reaps and purges itself; over HTTP, the server does (on each pull and
        # on its schedule), so `reap` and `purge` there change nothing and return 0.
        self.owned = isinstance(queue, OwnedQueue)

    async def enqueue(self, name: str = "a.txt", run: str = RUN, **options: Any) -> Job:
        return await self.queue.enqueue(run, T, f"{T}/{run}/{name}", **options)

    async def leased(self, name: str = "a.txt", **pull: Any) -> Job:
        """Enqueue one job and lease it (the only job available)."""
        job = await self.enqueue(name)
        (got,) = await self.queue.pull(max=1, **pull)
        assert got.id == job.id
        return got


def http_config(tmp_path: Path, poll_interval_seconds: float = 1.0) -> Config:
    return Config(
        # The server reaps only when a pull does (maintenance once an hour), and keeps every
        # finished job (retention 0), so that a test decides when each happens.
        queue=QueueConfig(
            path=str(tmp_path / "served.db"),
            reap_interval_seconds=3600,
            retention_seconds=0,
            retry_base_seconds=1.0,
            poll_interval_seconds=poll_interval_seconds,
        ),
        storage=StorageConfig(root=str(tmp_path / "objects")),
        pipeline=PipelineConfig(shutdown_grace_seconds=1),
        http=HttpConfig(enabled=True, port=0, queue_only=True),
        secrets=Secrets(http_tokens=Secret(f"{ADMIN}:admin")),
    )


OpenContract = Callable[..., contextlib.AbstractAsyncContextManager[Contract]]


@pytest.fixture(params=["sqlite", "postgres", "http"])
def open_contract(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> OpenContract:
    """How to open a fresh queue of one backend (prepared here, outside the event loop).

    ``poll_interval_seconds``: how often a waiting pull claims again for jobs no enqueue
    announced (the queue's, or the server's for HTTP)."""
    backend = str(request.param)
    schema = request.getfixturevalue("pg_empty_schema") if backend == "postgres" else None

    @contextlib.asynccontextmanager
    async def opened(poll_interval_seconds: float = 1.0) -> AsyncIterator[Contract]:
        # jitter=0: retry delays are exact (the HTTP server keeps its configured jitter).
        poll = poll_interval_seconds
        if backend == "sqlite":
            path = tmp_path / "queue.db"
            async with SQLiteQueue.open(
                path, clock=clock, backoff=Backoff(jitter=0.0), poll_interval_seconds=poll
            ) as q:
                yield Contract(q, clock, backend, lambda: q._waits.waiting)
        elif backend == "postgres":
            async with PostgresQueue.open(
                PG_DSN,
                schema=schema,
                clock=clock,
                backoff=Backoff(jitter=0.0),
                poll_interval_seconds=poll,
            ) as pg:
                yield Contract(pg, clock, backend, lambda: pg._waits.waiting)
        else:
            async with ActorSystem(http_config(tmp_path, poll), clock=clock) as system:
                server = system.http
                assert server is not None and server.port is not None
                url = f"http://127.0.0.1:{server.port}"
                async with HttpQueue.open(url, ADMIN) as remote:
                    yield Contract(remote, clock, backend, lambda: server.metrics.pulls_waiting)

    return opened


@pytest.fixture
async def contract(open_contract: OpenContract) -> AsyncIterator[Contract]:
    async with open_contract() as opened:
        yield opened


@pytest.mark.anyio
async def test_enqueue_returns_the_pending_job_and_get_reads_it_back(contract: Contract) -> None:
    q = contract.queue
    job = await contract.enqueue(
        payload={"pages": [1, 2]},
        priority=7,
        max_attempts=3,
        timeout_seconds=30,
        idempotency_key="k1",
    )
    assert (job.run_id, job.tenant_id, job.r2_key) == (RUN, T, f"{T}/{RUN}/a.txt")
    assert (job.status, job.attempts, job.max_attempts, job.priority) == ("pending", 0, 3, 7)
    assert job.payload == {"pages": [1, 2]} and job.timeout_seconds == 30
    assert job.available_at == job.created_at == contract.clock.time()
    assert await q.get(job.id) == job
    # The same idempotency key within the tenant names the same job; nothing is added.
    again = await contract.enqueue("other.txt", idempotency_key="k1")
    assert again.id == job.id and again.r2_key == job.r2_key
    assert (await q.stats()).pending == 1


@pytest.mark.anyio
async def test_enqueue_many_adds_every_job_or_none(contract: Contract) -> None:
    q = contract.queue
    assert await q.enqueue_many([]) == []
    news = [NewJob(run_id=RUN, tenant_id=T, r2_key=f"{T}/{RUN}/{i}.txt") for i in range(3)]
    jobs = await q.enqueue_many(news)
    assert [j.r2_key for j in jobs] == [n.r2_key for n in news]
    assert [j.id for j in jobs] == sorted(j.id for j in jobs)
    bad = NewJob(run_id=RUN, tenant_id=T, r2_key=f"{T}/{RUN}/x.txt", priority=10**9)
    with pytest.raises(OutOfRange if contract.owned else InvalidArgument, match="priority"):
        await q.enqueue_many([*news, bad])
    assert (await q.stats()).pending == 3


@pytest.mark.anyio
@pytest.mark.runtimes("asyncio", "trio")
async def test_on_enqueue_calls_back_after_each_enqueue_until_unsubscribed(
    contract: Contract,
) -> None:
    calls: list[int] = []
    unsubscribe = contract.queue.on_enqueue(lambda: calls.append(1))
    await contract.enqueue("a.txt")
    await contract.queue.enqueue_many([NewJob(run_id=RUN, tenant_id=T, r2_key=f"{T}/{RUN}/b")])
    # At least once per commit (PostgreSQL also hears its own NOTIFY, a moment later).
    assert len(calls) >= 2
    unsubscribe()
    unsubscribe()  # twice is harmless
    heard = len(calls)
    await contract.enqueue("c.txt")
    await anyio.sleep(0.05)
    assert len(calls) == heard


@pytest.mark.anyio
async def test_pull_leases_available_jobs_highest_priority_first(contract: Contract) -> None:
    q, clock = contract.queue, contract.clock
    low = await contract.enqueue("low", priority=0)
    high = await contract.enqueue("high", priority=5)
    mid = await contract.enqueue("mid", priority=1)
    later = await contract.enqueue("later", priority=9, delay_seconds=30)
    jobs = await q.pull(max=2, visibility_seconds=120, worker_id="w1")
    assert [j.id for j in jobs] == [high.id, mid.id]
    for job in jobs:
        assert job.status == "leased" and job.attempts == 1 and job.worker_id == "w1"
        assert job.lease_token and job.lease_expires_at == clock.time() + 120
        assert job.started_at is None
    assert len({j.lease_token for j in jobs}) == 2
    # `later` is not available yet.
    assert [j.id for j in await q.pull(max=10, visibility_seconds=120)] == [low.id]
    clock.advance(30)
    (due,) = await q.pull(max=10, started=True)
    assert due.id == later.id and due.started_at == clock.time()
    assert await q.pull() == []


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Wait (at most 10 s) until ``condition()`` holds."""
    with anyio.fail_after(10):
        while not condition():
            await anyio.sleep(0.005)


@pytest.mark.anyio
@pytest.mark.runtimes("asyncio", "trio")
async def test_a_waiting_pull_leases_a_job_enqueued_while_it_waits(
    open_contract: OpenContract,
) -> None:
    # Claims again only when woken: no look every poll interval within the test's wait.
    async with open_contract(poll_interval_seconds=3600) as contract:
        q = contract.queue
        got: list[Job] = []
        answered_at = 0.0
        async with anyio.create_task_group() as tg:

            async def pull() -> None:
                nonlocal answered_at
                got.extend(await q.pull(max=5, visibility_seconds=30, wait_seconds=20))
                answered_at = anyio.current_time()

            tg.start_soon(pull)
            await wait_until(lambda: contract.waiting() == 1, "the pull waits")
            await anyio.sleep(0.05)  # past its first claim, which found nothing
            enqueued_at = anyio.current_time()
            job = await contract.enqueue("late.txt")
        assert [(j.id, j.status, j.attempts) for j in got] == [(job.id, "leased", 1)]
        # Woken by the enqueue: not by its last claim when its 20 s are up (a functional
        # bound, not a speed: docs/benchmarks.md has the latency, milliseconds).
        assert answered_at - enqueued_at < 10
        assert contract.waiting() == 0
        # A waiting pull that finds a job at once answers at once, as a plain pull would.
        second = await contract.enqueue("second.txt")
        assert [j.id for j in await q.pull(wait_seconds=10)] == [second.id]


@pytest.mark.anyio
async def test_a_waiting_pull_with_nothing_to_lease_answers_empty_when_its_time_is_up(
    contract: Contract,
) -> None:
    q = contract.queue
    await contract.enqueue("later.txt", delay_seconds=60)  # not available within the wait
    assert await q.pull(wait_seconds=0.2) == []
    assert contract.waiting() == 0
    assert (await q.stats()).pending == 1


@pytest.mark.anyio
async def test_pull_refuses_a_wait_out_of_bounds(contract: Contract) -> None:
    q = contract.queue
    await contract.enqueue()
    error = OutOfRange if contract.owned else InvalidArgument
    for wait in (MAX_PULL_WAIT_SECONDS + 1, -1):
        with pytest.raises(error, match=r"wait_?[sS]econds") as refused:
            await q.pull(wait_seconds=wait)
        # Naming the bound it broke.
        assert f"{MAX_PULL_WAIT_SECONDS:g}" in str(refused.value) or wait < 0
    assert (await q.stats()).pending == 1  # nothing was leased


@pytest.mark.anyio
async def test_a_waiting_pull_cancelled_while_it_waits_leases_nothing(
    open_contract: OpenContract,
) -> None:
    async with open_contract(poll_interval_seconds=3600) as contract:
        q = contract.queue
        with anyio.move_on_after(0.3):
            await q.pull(wait_seconds=10)
        # Over HTTP the client's cancel closes the connection: the server stops waiting (or
        # gives back what it leased for a client that went).
        await wait_until(lambda: contract.waiting() == 0, "the pull stopped waiting")
        job = await contract.enqueue()
        assert (await q.get(job.id)).status == "pending"
        (leased,) = await q.pull()
        assert leased.id == job.id and leased.attempts == 1


@pytest.mark.anyio
async def test_start_many_marks_live_leases_started_and_refuses_the_rest(
    contract: Contract,
) -> None:
    q = contract.queue
    job = await contract.leased()
    assert job.lease_token is not None
    results = await q.start_many([(job.id, job.lease_token), (job.id, "0" * 32), (10**9, "x")])
    assert [(r.job_id, r.ok, r.reason) for r in results] == [
        (job.id, True, "ok"),
        (job.id, False, "superseded"),
        (10**9, False, "not_found"),
    ]
    assert results[1].message and "another token" in results[1].message
    assert (await q.get(job.id)).started_at == contract.clock.time()


@pytest.mark.anyio
async def test_renew_extends_a_live_lease_and_refuses_an_expired_one(contract: Contract) -> None:
    q, clock = contract.queue, contract.clock
    job = await contract.leased(visibility_seconds=10)
    assert job.lease_token is not None
    clock.advance(8)
    renewed = await q.renew(job.id, job.lease_token, 30)
    assert renewed.status == "leased"
    assert (await q.get(job.id)).lease_expires_at == clock.time() + 30
    (item,) = await q.renew_many([(job.id, job.lease_token)], 60)
    assert item.ok and item.reason == "ok"
    clock.advance(61)
    with pytest.raises(LeaseLost, match="after its lease expired"):
        await q.renew(job.id, job.lease_token, 30)
    (item,) = await q.renew_many([(job.id, job.lease_token)], 30)
    assert (item.ok, item.reason) == (False, "expired")


@pytest.mark.anyio
async def test_release_gives_the_job_back_without_spending_an_attempt(contract: Contract) -> None:
    q, clock = contract.queue, contract.clock
    job = await contract.leased()
    assert job.lease_token is not None
    await q.release(job.id, job.lease_token, delay_seconds=10)
    back = await q.get(job.id)
    assert (back.status, back.attempts, back.lease_token) == ("pending", 0, None)
    assert back.available_at == clock.time() + 10
    with pytest.raises(LeaseLost):
        await q.release(job.id, job.lease_token)
    (item,) = await q.release_many([(job.id, job.lease_token)])
    assert (item.ok, item.reason) == (False, "not_leased")
    clock.advance(10)
    (again,) = await q.pull()
    assert again.id == job.id and again.attempts == 1 and again.lease_token
    (item,) = await q.release_many([(again.id, again.lease_token)])
    assert (item.ok, item.reason) == (True, "ok")


@pytest.mark.anyio
async def test_ack_done_stores_the_result_and_the_runs_metrics_once(contract: Contract) -> None:
    q = contract.queue
    job = await contract.leased()
    assert job.lease_token is not None
    await q.ack(job.id, job.lease_token, result={"words": 3}, run_metrics={"bytes": 12})
    done = await q.get(job.id)
    assert (done.status, done.result, done.finished_at) == ("done", {"words": 3}, done.updated_at)
    # The same ack again (a retry after a lost reply) already happened: nothing changes.
    (item,) = await q.ack_many([Ack(job_id=job.id, lease_token=job.lease_token, result=1)])
    assert (item.ok, item.reason) == (True, "duplicate")
    summary = await q.run_summary(RUN)
    assert (summary.status, summary.total, summary.done) == ("done", 1, 1)
    assert summary.metrics == {"bytes": 12.0}


@pytest.mark.anyio
async def test_ack_failed_retries_after_a_backoff_until_the_attempts_run_out(
    contract: Contract,
) -> None:
    q, clock = contract.queue, contract.clock
    job = await contract.enqueue(max_attempts=2)
    (first,) = await q.pull()
    assert first.lease_token is not None
    await q.ack(first.id, first.lease_token, status="failed", error="boom 1")
    retry = await q.get(job.id)
    assert (retry.status, retry.attempts, retry.last_error) == ("pending", 1, "boom 1")
    # Base 1 s for the first retry, less up to half at random on the server (jitter 0.5).
    assert clock.time() + 0.5 <= retry.available_at <= clock.time() + 1.0
    assert await q.pull() == []
    clock.advance(1)
    (second,) = await q.pull()
    assert second.lease_token is not None and second.attempts == 2
    await q.ack(second.id, second.lease_token, status="failed", error="boom 2")
    failed = await q.get(job.id)
    assert (failed.status, failed.last_error, failed.finished_at) == (
        "failed",
        "boom 2",
        clock.time(),
    )
    assert (await q.run_summary(RUN)).status == "failed"


@pytest.mark.anyio
async def test_a_permanent_failure_is_final_until_requeued(contract: Contract) -> None:
    q = contract.queue
    job = await contract.leased()
    other = await contract.enqueue("other.txt", run="r2")
    assert job.lease_token is not None
    await q.ack(job.id, job.lease_token, status="failed", error="missing", permanent=True)
    assert (await q.get(job.id)).status == "failed"
    assert await q.requeue(run_id="r2") == 0  # `other` is pending, not failed
    assert await q.requeue([job.id]) == 1
    back = await q.get(job.id)
    assert (back.status, back.attempts, back.finished_at) == ("pending", 0, None)
    assert await q.requeue(tenant_id=T) == 0
    assert (await q.get(other.id)).status == "pending"


@pytest.mark.anyio
async def test_ack_many_refuses_only_the_stale_item(contract: Contract) -> None:
    q = contract.queue
    await contract.enqueue("a")
    await contract.enqueue("b")
    a, b = await q.pull(max=2)
    assert a.lease_token is not None and b.lease_token is not None
    results = await q.ack_many(
        [
            Ack(job_id=a.id, lease_token=a.lease_token, result="A"),
            Ack(job_id=b.id, lease_token="f" * 32, result="B"),
        ]
    )
    assert [(r.ok, r.reason) for r in results] == [(True, "ok"), (False, "superseded")]
    assert results[0].job is not None and results[0].job.status == "done"
    assert (await q.get(b.id)).status == "leased"
    with pytest.raises(LeaseLost):
        await q.ack(b.id, "f" * 32)


@pytest.mark.anyio
async def test_ack_ids_settles_only_live_leases_the_owner_took(contract: Contract) -> None:
    q = contract.queue
    # Over HTTP the owner is the client's token, whatever the call says.
    job = await contract.leased(owner="owner-1")
    pending = await contract.enqueue("pending.txt")
    results = await q.ack_ids([job.id, pending.id, 10**9], "done", owner="owner-1")
    assert [(r.job_id, r.ok, r.reason) for r in results] == [
        (job.id, True, "ok"),
        (pending.id, False, "not_leased"),
        (10**9, False, "not_found"),
    ]
    assert (await q.get(job.id)).status == "done"


@pytest.mark.anyio
async def test_an_expired_lease_is_reaped_and_its_job_leased_again(contract: Contract) -> None:
    q, clock = contract.queue, contract.clock
    job = await contract.leased(visibility_seconds=10)
    assert job.lease_token is not None
    clock.advance(10)
    assert await q.reap() == (1 if contract.owned else 0)
    (again,) = await q.pull()  # (over HTTP the server reaps here)
    assert again.id == job.id and again.lease_token != job.lease_token
    # Never started, so the expired lease cost no attempt.
    assert again.attempts == 1
    with pytest.raises(LeaseLost, match="leased it again"):
        await q.ack(job.id, job.lease_token)


@pytest.mark.anyio
async def test_cancel_many_cancels_a_pending_job_at_once_and_marks_a_leased_one(
    contract: Contract,
) -> None:
    q, clock = contract.queue, contract.clock
    leased = await contract.leased()
    assert leased.lease_token is not None
    finished = await contract.enqueue("finished.txt")
    (done,) = await q.pull()
    assert done.lease_token is not None
    await q.ack(done.id, done.lease_token)
    pending = await contract.enqueue("pending.txt")
    clock.advance(1)
    results = await q.cancel_many([pending.id, leased.id, finished.id, 10**9])
    assert [(r.job_id, r.ok, r.reason) for r in results] == [
        (pending.id, True, "ok"),
        (leased.id, True, "ok"),
        (finished.id, False, "finished"),
        (10**9, False, "not_found"),
    ]
    # A pending job is cancelled at once, a terminal status of its own.
    cancelled = await q.get(pending.id)
    assert (cancelled.status, cancelled.finished_at) == ("cancelled", clock.time())
    assert cancelled.cancel_requested_at == clock.time()
    # A leased one is marked: still leased until its holder calls.
    marked = await q.get(leased.id)
    assert (marked.status, marked.cancel_requested_at) == ("leased", clock.time())
    assert (await q.get(finished.id)).status == "done"
    # Cancelling again changes nothing.
    again = await q.cancel_many([pending.id, leased.id])
    assert [(r.ok, r.reason) for r in again] == [(True, "duplicate"), (True, "duplicate")]
    stats = await q.stats()
    assert (stats.pending, stats.leased, stats.done, stats.cancelled) == (0, 1, 1, 1)
    assert stats.total == 3
    # Its holder's renewal is refused as cancelled; its ack too, and that ends it cancelled.
    (renewal,) = await q.renew_many([(leased.id, leased.lease_token)], 60)
    assert (renewal.ok, renewal.reason) == (False, "cancelled")
    assert renewal.message and "cancelled" in renewal.message
    (ack,) = await q.ack_many([Ack(job_id=leased.id, lease_token=leased.lease_token, result=1)])
    assert (ack.ok, ack.reason) == (False, "cancelled")
    with pytest.raises(LeaseLost, match="cancelled"):
        await q.ack(leased.id, leased.lease_token)
    ended = await q.get(leased.id)
    # Invariant: nothing cancelled is ever marked done (its result is dropped).
    assert (ended.status, ended.result, ended.finished_at) == ("cancelled", None, clock.time())
    summary = await q.run_summary(RUN)
    assert (summary.done, summary.cancelled, summary.pending, summary.leased) == (1, 2, 0, 0)
    assert summary.total == 3 and summary.status == "cancelled"
    assert summary.finished_at == clock.time()
    listed = await q.list(status="cancelled")
    assert [j.id for j in listed.items] == [leased.id, pending.id]


@pytest.mark.anyio
async def test_a_cancel_limited_to_a_tenant_answers_other_tenants_jobs_as_missing(
    contract: Contract,
) -> None:
    q = contract.queue
    mine = await contract.enqueue()
    theirs = await q.enqueue("r-other", "t2", "t2/r-other/a.txt")
    results = await q.cancel_many([theirs.id, mine.id], tenant_id=T)
    assert [(r.job_id, r.ok, r.reason) for r in results] == [
        (theirs.id, False, "not_found"),
        (mine.id, True, "ok"),
    ]
    assert results[0].job is None
    assert (await q.get(theirs.id)).status == "pending"
    with pytest.raises(RunNotFound):
        await q.cancel_run("r-other", tenant_id=T)
    assert (await q.get(theirs.id)).status == "pending"


@pytest.mark.anyio
async def test_a_marked_lease_ends_cancelled_when_given_back_or_reaped_never_pending(
    contract: Contract,
) -> None:
    q, clock = contract.queue, contract.clock
    await contract.enqueue("a")
    await contract.enqueue("b")
    a, b = await q.pull(max=2, visibility_seconds=10)
    assert a.lease_token is not None and b.lease_token is not None
    await q.cancel_many([a.id, b.id])
    (start,) = await q.start_many([(a.id, a.lease_token)])
    assert (start.ok, start.reason) == (False, "cancelled")
    (release,) = await q.release_many([(a.id, a.lease_token)])
    assert (release.ok, release.reason) == (False, "cancelled")
    assert (await q.get(a.id)).status == "cancelled"
    # b's holder died: its lease expires, and the reaper ends it cancelled, not pending.
    clock.advance(10)
    assert await q.reap() == (1 if contract.owned else 0)
    assert await q.pull() == []  # (over HTTP the server reaps here)
    assert (await q.get(b.id)).status == "cancelled"
    assert (await q.stats()).cancelled == 2
    assert (await q.run_summary(RUN)).status == "cancelled"


@pytest.mark.anyio
async def test_cancel_run_cancels_every_unfinished_job_and_the_run_ends_cancelled(
    contract: Contract,
) -> None:
    q = contract.queue
    await contract.enqueue("a")
    await contract.enqueue("b")
    await contract.enqueue("c")
    (done,) = await q.pull(max=1)
    assert done.lease_token is not None
    await q.ack(done.id, done.lease_token)
    (leased,) = await q.pull(max=1)
    assert leased.lease_token is not None
    outcome = await q.cancel_run(RUN)
    assert (outcome.run_id, outcome.cancelled, outcome.cancel_requested) == (RUN, 1, 1)
    summary = await q.run_summary(RUN)
    # The leased job is still being given back: the run is not over yet.
    assert (summary.status, summary.leased, summary.cancelled) == ("processing", 1, 1)
    (item,) = await q.ack_many(
        [Ack(job_id=leased.id, lease_token=leased.lease_token, status="failed", error="stop")]
    )
    assert item.reason == "cancelled"
    summary = await q.run_summary(RUN)
    assert (summary.status, summary.done, summary.cancelled, summary.failed) == (
        "cancelled",
        1,
        2,
        0,
    )
    again = await q.cancel_run(RUN)
    assert (again.cancelled, again.cancel_requested) == (0, 0)
    with pytest.raises(RunNotFound):
        await q.cancel_run("no-such-run")


@pytest.mark.anyio
async def test_on_cancel_calls_back_when_a_cancel_marks_a_lease_until_unsubscribed(
    contract: Contract,
) -> None:
    q = contract.queue
    calls: list[int] = []
    unsubscribe = q.on_cancel(lambda: calls.append(1))
    pending = await contract.enqueue("pending.txt")
    await q.cancel_many([pending.id])
    assert calls == []  # nothing leased was marked: no holder to tell
    leased = await contract.leased()
    await q.cancel_many([leased.id])
    assert len(calls) >= 1  # (PostgreSQL may also hear its own NOTIFY, a moment later)
    unsubscribe()
    unsubscribe()  # twice is harmless
    heard = len(calls)
    await contract.leased("c.txt")
    await q.cancel_run(RUN)
    await anyio.sleep(0.05)
    assert len(calls) == heard


@pytest.mark.anyio
async def test_purge_deletes_only_finished_jobs_older_than_the_age(contract: Contract) -> None:
    q, clock = contract.queue, contract.clock
    job = await contract.leased()
    waiting = await contract.enqueue("waiting.txt")
    assert job.lease_token is not None
    await q.ack(job.id, job.lease_token)
    clock.advance(100)
    assert await q.purge(older_than_seconds=200) == 0
    purged = await q.purge(older_than_seconds=50)
    assert (await q.get(waiting.id)).status == "pending"
    if contract.owned:
        assert purged == 1
        with pytest.raises(JobNotFound):
            await q.get(job.id)
    else:  # the server's retention decides
        assert purged == 0


@pytest.mark.anyio
async def test_stats_count_jobs_by_status_and_the_oldest_available_ones_age(
    contract: Contract,
) -> None:
    q, clock = contract.queue, contract.clock
    empty = await q.stats()
    assert (empty.pending, empty.leased, empty.done, empty.failed, empty.total) == (0, 0, 0, 0, 0)
    assert empty.oldest_pending_age_seconds is None
    done = await contract.leased("done")
    assert done.lease_token is not None
    await q.ack(done.id, done.lease_token)
    await contract.leased("leased")
    await contract.enqueue("waiting")
    await contract.enqueue("scheduled", delay_seconds=3600)
    clock.advance(5)
    stats = await q.stats()
    assert (stats.pending, stats.scheduled, stats.leased, stats.done, stats.failed) == (
        2,
        1,
        1,
        1,
        0,
    )
    assert stats.total == 4 and stats.oldest_pending_age_seconds == 5


@pytest.mark.anyio
async def test_run_summary_counts_a_runs_jobs_and_an_unknown_run_is_not_found(
    contract: Contract,
) -> None:
    q = contract.queue
    with pytest.raises(RunNotFound):
        await q.run_summary("nope")
    await contract.enqueue("a")
    await contract.enqueue("b")
    queued = await q.run_summary(RUN)
    assert (queued.run_id, queued.tenant_id, queued.status, queued.total) == (RUN, T, "queued", 2)
    job = (await q.pull(max=1))[0]
    assert job.lease_token is not None
    await q.ack(job.id, job.lease_token)
    working = await q.run_summary(RUN)
    assert (working.status, working.pending, working.done, working.finished_at) == (
        "processing",
        1,
        1,
        None,
    )


@pytest.mark.anyio
async def test_list_pages_through_jobs_in_id_order_with_filters(contract: Contract) -> None:
    q = contract.queue
    ids = [(await contract.enqueue(f"{i}.txt", run="ra" if i % 2 else "rb")).id for i in range(5)]
    seen: list[int] = []
    cursor = None
    while True:
        page = await q.list(limit=2, cursor=cursor)
        assert len(page.items) <= 2
        seen += [j.id for j in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == ids
    assert [j.id for j in (await q.list(run_id="ra")).items] == ids[1::2]
    assert (await q.list(tenant_id="other")).items == []
    await q.pull(max=1)
    assert [j.id for j in (await q.list(status="leased")).items] == ids[:1]
    with pytest.raises(InvalidArgument, match="cursor"):
        await q.list(cursor="not-a-cursor")


@pytest.mark.anyio
async def test_create_schedule_adds_or_replaces_and_list_and_delete_schedule_see_it(
    contract: Contract,
) -> None:
    q, now = contract.queue, contract.clock.time()
    every = NewSchedule(
        name="every-minute", tenant_id=T, r2_key=f"{T}/report.md", interval_seconds=60
    )
    created = await q.create_schedule(every)
    first = (now // 60 + 1) * 60  # intervals tick at the multiples of their seconds
    assert (created.name, created.tenant_id, created.next_tick_at) == ("every-minute", T, first)
    assert created.last_tick_at is None and created.created_at == now
    # Replaced with the same timing: the next tick stays; a new timing starts afresh.
    contract.clock.advance(10)
    same = await q.create_schedule(msgspec.structs.replace(every, payload={"v": 2}, priority=3))
    assert (same.next_tick_at, same.payload, same.priority) == (first, {"v": 2}, 3)
    cron = msgspec.structs.replace(
        every, interval_seconds=None, cron="0 3 * * *", timezone="Europe/Berlin"
    )
    moved = await q.create_schedule(cron)
    assert moved.next_tick_at > first and moved.cron == "0 3 * * *"
    other = NewSchedule(name="n", tenant_id="t2", r2_key="t2/a", interval_seconds=5)
    await q.create_schedule(other)
    assert [(s.tenant_id, s.name) for s in await q.list_schedules()] == [
        (T, "every-minute"),
        ("t2", "n"),
    ]
    assert [s.name for s in await q.list_schedules(tenant_id="t2")] == ["n"]
    # Names are unique within a tenant: deleting t1's leaves t2's.
    gone = await q.delete_schedule(T, "every-minute")
    assert gone.timezone == "Europe/Berlin"
    with pytest.raises(ScheduleNotFound):
        await q.delete_schedule(T, "every-minute")
    with pytest.raises(ScheduleNotFound):
        await q.delete_schedule(T, "n")
    assert [s.name for s in await q.list_schedules()] == ["n"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "0 0 30 2 *"}, "cron"),
        ({"cron": "* * * * *", "timezone": "Mars/Olympus"}, "timezone"),
        ({"cron": "* * * * *", "interval_seconds": 5}, "cron"),
        ({}, "cron"),
        ({"interval_seconds": 0}, "interval"),
        ({"interval_seconds": 5, "name": "no/slash"}, "name"),
    ],
)
async def test_a_bad_schedule_is_refused_naming_what_is_wrong(
    contract: Contract, change: dict[str, Any], field: str
) -> None:
    schedule = msgspec.convert(
        {"name": "s", "tenant_id": T, "r2_key": f"{T}/a", **change}, NewSchedule
    )
    with pytest.raises(InvalidArgument) as refused:
        await contract.queue.create_schedule(schedule)
    assert field in str(refused.value).lower().replace("_", "")
    assert await contract.queue.list_schedules() == []


@pytest.mark.anyio
async def test_get_of_an_unknown_job_raises_job_not_found(contract: Contract) -> None:
    with pytest.raises(JobNotFound):
        await contract.queue.get(10**9)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda q: q.pull(max=0), "max"),
        (lambda q: q.pull(max=MAX_PULL + 1), "max"),
        (lambda q: q.pull(visibility_seconds=0), "visibilityseconds"),
        (lambda q: q.pull(visibility_seconds=MAX_VISIBILITY_SECONDS + 1), "visibilityseconds"),
        (lambda q: q.enqueue(RUN, T, f"{T}/a", delay_seconds=-1), "delayseconds"),
        (lambda q: q.enqueue(RUN, T, f"{T}/a", max_attempts=0), "maxattempts"),
        (lambda q: q.enqueue(RUN, T, "", priority=0), "r2key"),
        (lambda q: q.renew_many([(1, "x")], 0), "visibilityseconds"),
        (lambda q: q.release_many([(1, "x")], -1), "delayseconds"),
        (lambda q: q.list(limit=0), "limit"),
        (lambda q: q.pause(""), "tenantid"),
        (lambda q: q.set_tenant_limits(T, weight=0), "weight"),
        (lambda q: q.set_tenant_limits(T, max_leased=0), "maxleased"),
        (lambda q: q.set_tenant_limits(T, max_per_second=-1), "maxpersecond"),
    ],
)
async def test_a_bad_argument_is_refused_as_invalid_naming_it(
    contract: Contract, call: Callable[[Queue], Awaitable[object]], field: str
) -> None:
    with pytest.raises(InvalidArgument) as refused:
        await call(contract.queue)
    # Named as the call spells it (visibility_seconds) or as the wire does (visibilitySeconds).
    assert field in str(refused.value).lower().replace("_", "")
    assert (await contract.queue.stats()).total == 0


@pytest.mark.anyio
async def test_a_payload_over_the_limit_is_refused(contract: Contract) -> None:
    with pytest.raises(PayloadTooLarge, match="over the limit"):
        await contract.enqueue(payload="x" * (DEFAULT_MAX_PAYLOAD_BYTES + 1))
    assert (await contract.queue.stats()).total == 0


@pytest.mark.anyio
@pytest.mark.runtimes("asyncio", "trio")
async def test_a_closed_queue_refuses_every_verb(contract: Contract) -> None:
    await contract.queue.aclose()
    with pytest.raises(QueueClosed):
        await contract.enqueue()
    with pytest.raises(QueueClosed):
        await contract.queue.pull()


# --- the queue's controls: pause, fair shares, per-tenant limits ---------------------------------


async def enqueue_for(contract: Contract, tenant: str, count: int, run: str = "") -> None:
    run = run or f"run-{tenant}"
    await contract.queue.enqueue_many(
        [NewJob(run_id=run, tenant_id=tenant, r2_key=f"{tenant}/{run}/{i}") for i in range(count)]
    )


@pytest.mark.anyio
async def test_a_paused_queue_leases_nothing_new_but_its_leases_renew_and_ack(
    contract: Contract,
) -> None:
    q = contract.queue
    leased = await contract.leased("a.txt")
    await contract.enqueue("b.txt")
    controls = await q.pause()
    assert controls.paused and controls.tenants == []
    stats = await q.stats()
    assert (stats.paused, stats.paused_tenants) == (True, [])
    assert await q.pull(max=10) == []
    renewed = await q.renew(leased.id, leased.lease_token or "", 30)
    assert renewed.status == "leased"
    done = await q.ack(leased.id, leased.lease_token or "")
    assert done.status == "done"
    assert await q.pull(max=10) == []
    assert (await q.controls()).paused
    resumed = await q.resume()
    assert not resumed.paused and not (await q.stats()).paused
    assert [j.r2_key for j in await q.pull(max=10)] == [f"{T}/{RUN}/b.txt"]


@pytest.mark.anyio
async def test_a_paused_tenant_leases_nothing_new_while_the_others_go_on(
    contract: Contract,
) -> None:
    q = contract.queue
    await enqueue_for(contract, "ta", 3)
    await enqueue_for(contract, "tb", 3)
    controls = await q.pause("ta")
    assert [(t.tenant_id, t.paused) for t in controls.tenants] == [("ta", True)]
    assert (await q.stats()).paused_tenants == ["ta"]
    assert {j.tenant_id for j in await q.pull(max=10)} == {"tb"}
    assert await q.pull(max=10) == []
    resumed = await q.resume("ta")
    assert resumed.tenants == []  # a row that controls nothing is not kept
    assert {j.tenant_id for j in await q.pull(max=10)} == {"ta"}


@pytest.mark.anyio
async def test_a_pull_serves_tenants_in_turns_whatever_their_backlogs(contract: Contract) -> None:
    await enqueue_for(contract, "big", 300)
    await enqueue_for(contract, "small", 4)
    first = await contract.queue.pull(max=6)
    # Turns: big, small, big, small, ...: every one of small's jobs within two pulls of 6.
    assert sorted(j.tenant_id for j in first) == ["big"] * 3 + ["small"] * 3
    second = await contract.queue.pull(max=6)
    assert sorted(j.tenant_id for j in second) == ["big"] * 5 + ["small"]


@pytest.mark.anyio
async def test_a_tenants_weight_is_its_jobs_per_turn_and_priority_orders_its_own(
    contract: Contract,
) -> None:
    q = contract.queue
    controls = await q.set_tenant_limits("heavy", weight=3)
    assert [(t.tenant_id, t.weight, t.max_leased) for t in controls.tenants] == [("heavy", 3, None)]
    await enqueue_for(contract, "heavy", 20)
    await enqueue_for(contract, "light", 20)
    await q.enqueue("urgent", "light", "light/urgent/x", priority=5)
    jobs = await q.pull(max=8)
    assert sorted(j.tenant_id for j in jobs) == ["heavy"] * 6 + ["light"] * 2
    assert "light/urgent/x" in {j.r2_key for j in jobs}


@pytest.mark.anyio
async def test_a_tenant_never_holds_more_live_leases_than_its_limit(contract: Contract) -> None:
    q = contract.queue
    await q.set_tenant_limits("capped", max_leased=3)
    await enqueue_for(contract, "capped", 10)
    await enqueue_for(contract, "free", 10)
    first = await q.pull(max=20)
    assert sorted(j.tenant_id for j in first).count("capped") == 3
    assert await q.pull(max=20) == []  # capped is at its limit, free is drained
    one = next(j for j in first if j.tenant_id == "capped")
    await q.ack(one.id, one.lease_token or "")
    assert [j.tenant_id for j in await q.pull(max=20)] == ["capped"]
    (limits,) = (await q.controls()).tenants
    assert (limits.tenant_id, limits.max_leased, limits.max_per_second) == ("capped", 3, None)
    cleared = await q.set_tenant_limits("capped")
    assert cleared.tenants == []
    assert len(await q.pull(max=20)) == 6


@pytest.mark.anyio
async def test_a_tenants_rate_limit_spaces_its_leases_on_the_queues_clock(
    contract: Contract,
) -> None:
    q = contract.queue
    await q.set_tenant_limits("slow", max_per_second=2)
    await enqueue_for(contract, "slow", 20)
    # A full bucket of 2, then 2 a second: never more than 2 + 2t leases over t seconds.
    assert len(await q.pull(max=20)) == 2
    assert await q.pull(max=20) == []
    contract.clock.advance(0.5)
    assert len(await q.pull(max=20)) == 1
    contract.clock.advance(10)  # the bucket holds 2 at most, however long it waited
    assert len(await q.pull(max=20)) == 2
    assert await q.pull(max=20) == []


# --- what only a queue on its own storage offers ------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def open_owned(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> Callable[[], contextlib.AbstractAsyncContextManager[OwnedQueue]]:
    if request.param == "sqlite":
        return lambda: SQLiteQueue.open(tmp_path / "queue.db", clock=clock)
    schema = request.getfixturevalue("pg_empty_schema")
    return lambda: PostgresQueue.open(PG_DSN, schema=schema, clock=clock)


@pytest.fixture
async def owned(
    open_owned: Callable[[], contextlib.AbstractAsyncContextManager[OwnedQueue]],
) -> AsyncIterator[OwnedQueue]:
    async with open_owned() as queue:
        yield queue


@pytest.mark.anyio
async def test_one_caller_claims_each_maintenance_round(
    owned: OwnedQueue, clock: FakeClock
) -> None:
    first = await owned.claim_maintenance("reap", 60, owner="p1")
    assert (first.claimed, first.round, first.due_at) == (True, 1, clock.time() + 60)
    second = await owned.claim_maintenance("reap", 60, owner="p2")
    assert (second.claimed, second.round) == (False, 1)
    clock.advance(60)
    third = await owned.claim_maintenance("reap", 60, owner="p2")
    assert (third.claimed, third.round) == (True, 2)
    with pytest.raises(OutOfRange, match="interval_seconds"):
        await owned.claim_maintenance("reap", 0)


@pytest.mark.anyio
async def test_list_runs_pages_through_runs_oldest_first(owned: OwnedQueue) -> None:
    for run in ("r1", "r2", "r3"):
        await owned.enqueue(run, "t1" if run != "r2" else "t2", f"t/{run}/a")
    first = await owned.list_runs(limit=2)
    assert [s.run_id for s in first.items] == ["r1", "r2"] and first.next_cursor
    rest = await owned.list_runs(limit=2, cursor=first.next_cursor)
    assert [s.run_id for s in rest.items] == ["r3"] and rest.next_cursor is None
    assert [s.run_id for s in (await owned.list_runs(tenant_id="t1")).items] == ["r1", "r3"]
    with pytest.raises(OutOfRange, match="limit"):
        await owned.list_runs(limit=0)


@pytest.mark.anyio
async def test_fire_schedules_enqueues_one_job_per_due_tick_across_processes(
    open_owned: Callable[[], contextlib.AbstractAsyncContextManager[OwnedQueue]],
    clock: FakeClock,
) -> None:
    async with open_owned() as one, open_owned() as two:
        s = await one.create_schedule(
            NewSchedule(name="tick", tenant_id=T, r2_key=f"{T}/a", interval_seconds=10)
        )
        nothing = await one.fire_schedules()
        assert nothing.jobs == [] and nothing.next_due_at == s.next_tick_at
        keys: list[str] = []
        for _ in range(5):
            clock.advance(s.next_tick_at + 5 - clock.time())  # 5 s late: within the grace
            # Two processes (two handles on the same storage) fire at once.
            results = []
            async with anyio.create_task_group() as tg:
                for q in (one, two, one, two):
                    tg.start_soon(_append, results, q.fire_schedules())
            keys += [j.idempotency_key or "" for r in results for j in r.jobs]
            s = next(x for x in await one.list_schedules() if x.name == "tick")
        ticks = [int(s.next_tick_at) - 10 * (5 - i) for i in range(5)]
        assert keys == [f"schedule:tick:{tick_text(t)}" for t in ticks]  # once each, in order
        jobs = (await one.list(tenant_id=T)).items
        assert [j.run_id for j in jobs] == [f"schedule:{T}:tick:{tick_text(t)}" for t in ticks]
        assert s.last_tick_at == ticks[-1]
        # A late round enqueues every tick within the grace (60 s), each once.
        clock.advance(35)
        late = await two.fire_schedules()
        assert len(late.jobs) == 4 and (await one.fire_schedules()).jobs == []


async def _append(results: list[Any], call: Awaitable[Any]) -> None:
    results.append(await call)


@pytest.mark.anyio
@pytest.mark.parametrize("missed", ["catch_up", "skip"])
async def test_ticks_missed_while_everything_was_down_are_caught_up_once_or_skipped(
    owned: OwnedQueue, clock: FakeClock, missed: str
) -> None:
    s = await owned.create_schedule(
        msgspec.convert(
            {
                "name": "hourly",
                "tenant_id": T,
                "r2_key": f"{T}/a",
                "cron": "0 * * * *",
                "missed": missed,
                "grace_seconds": 60,
            },
            NewSchedule,
        )
    )
    # Everything was down for five hours and a half: ticks at :00 of five hours were missed.
    clock.advance(s.next_tick_at - clock.time() + 4 * 3600 + 1800)
    firing = await owned.fire_schedules()
    latest = s.next_tick_at + 4 * 3600
    if missed == "catch_up":
        assert [j.idempotency_key for j in firing.jobs] == [f"schedule:hourly:{tick_text(latest)}"]
    else:
        assert firing.jobs == []
    assert firing.next_due_at == latest + 3600  # back on its cadence
    assert (await owned.fire_schedules()).jobs == []


@pytest.mark.anyio
async def test_a_tick_whose_run_another_tenant_took_is_skipped_and_the_others_fire(
    owned: OwnedQueue, clock: FakeClock
) -> None:
    a = await owned.create_schedule(
        NewSchedule(name="a", tenant_id=T, r2_key=f"{T}/a", interval_seconds=60)
    )
    await owned.create_schedule(
        NewSchedule(name="b", tenant_id=T, r2_key=f"{T}/b", interval_seconds=60)
    )
    # The queue itself does not reserve tick run ids (`tenancy.check_run_id` does, at the edge).
    squatted = f"schedule:{T}:a:{tick_text(a.next_tick_at)}"
    await owned.enqueue(squatted, "intruder", "intruder/x")
    clock.advance(a.next_tick_at - clock.time())
    firing = await owned.fire_schedules()
    assert [j.idempotency_key for j in firing.jobs] == [f"schedule:b:{tick_text(a.next_tick_at)}"]
    assert all(s.next_tick_at == a.next_tick_at + 60 for s in await owned.list_schedules())
    clock.advance(60)  # the next tick of `a` fires as usual
    assert len((await owned.fire_schedules()).jobs) == 2


@pytest.mark.anyio
async def test_list_runs_pages_newest_first_when_asked(owned: OwnedQueue) -> None:
    for run in ("r1", "r2", "r3", "r4"):
        await owned.enqueue(run, "t1" if run != "r2" else "t2", f"t/{run}/a")
    first = await owned.list_runs(limit=2, newest_first=True)
    assert [s.run_id for s in first.items] == ["r4", "r3"] and first.next_cursor
    rest = await owned.list_runs(limit=2, cursor=first.next_cursor, newest_first=True)
    assert [s.run_id for s in rest.items] == ["r2", "r1"] and rest.next_cursor is None
    scoped = await owned.list_runs(tenant_id="t1", limit=2, newest_first=True)
    assert [s.run_id for s in scoped.items] == ["r4", "r3"]
    after = await owned.list_runs(
        tenant_id="t1", limit=2, cursor=scoped.next_cursor, newest_first=True
    )
    assert [s.run_id for s in after.items] == ["r1"] and after.next_cursor is None


@pytest.mark.anyio
async def test_throughput_counts_jobs_done_and_failed_per_minute(
    owned: OwnedQueue, clock: FakeClock
) -> None:
    start = (clock.time() // 60 + 1) * 60
    clock.advance(start - clock.time())  # the start of a minute
    await owned.enqueue_many(
        [NewJob(run_id="r", tenant_id="t", r2_key=f"t/{i}", max_attempts=1) for i in range(4)]
    )
    assert await owned.throughput(0) == []
    a, b = await owned.pull(max=2, visibility_seconds=60)
    await owned.ack(a.id, a.lease_token or "", status="done")
    clock.advance(30)  # the same minute
    await owned.ack(b.id, b.lease_token or "", status="failed", error="boom")
    clock.advance(60)  # the next minute
    c, d = await owned.pull(max=2, visibility_seconds=60)
    await owned.ack(c.id, c.lease_token or "", status="done")
    assert await owned.throughput(0) == [
        Throughput(minute=start, done=1, failed=1),
        Throughput(minute=start + 60, done=1, failed=0),
    ]
    assert await owned.throughput(start + 60) == [Throughput(minute=start + 60, done=1, failed=0)]
    assert d.status == "leased"  # a leased job has not finished: it is in no minute
    with pytest.raises(OutOfRange, match="since"):
        await owned.throughput(-1)


def imported(origin: str, run: str = "r1", tenant: str = "t1", **fields: Any) -> ImportedJob:
    """A job as another system held it (times long before the queue's clock)."""
    return ImportedJob(
        origin=origin,
        run_id=run,
        tenant_id=tenant,
        r2_key=f"{tenant}/{run}/{origin}",
        created_at=fields.pop("created_at", 1_700_000_000.0),
        updated_at=fields.pop("updated_at", 1_700_000_100.0),
        **fields,
    )


@pytest.mark.anyio
async def test_import_jobs_keeps_each_jobs_state_and_times_and_never_imports_an_origin_twice(
    owned: OwnedQueue, clock: FakeClock
) -> None:
    results = await owned.import_jobs(
        [
            imported("d1:a", attempts=2, payload={"k": "ü"}),
            imported("d1:b", status="done", attempts=1, result={"words": 3}),
            imported("d1:c", status="failed", attempts=9, last_error="boom", created_at=1.0),
            imported("d1:d", run="r2", tenant="t2", priority=3),
        ]
    )
    assert [(r.origin, r.ok, r.reason) for r in results] == [
        ("d1:a", True, "ok"),
        ("d1:b", True, "ok"),
        ("d1:c", True, "ok"),
        ("d1:d", True, "ok"),
    ]
    a, b, c, d = (r.job for r in results)
    assert a is not None and b is not None and c is not None and d is not None
    assert (a.status, a.attempts, a.max_attempts, a.payload) == ("pending", 2, 5, {"k": "ü"})
    assert (a.created_at, a.updated_at, a.available_at) == (1.7e9, 1_700_000_100.0, clock.time())
    assert (b.status, b.result, b.finished_at) == ("done", {"words": 3}, 1_700_000_100.0)
    # Attempts spent elsewhere never exceed the limit here.
    assert (c.status, c.attempts, c.max_attempts, c.last_error) == ("failed", 9, 9, "boom")
    assert await owned.get(a.id) == a and a.origin == "d1:a"
    # The runs' counts, tenants and times follow the imported jobs.
    r1 = await owned.run_summary("r1")
    assert (r1.tenant_id, r1.total, r1.pending, r1.done, r1.failed) == ("t1", 3, 1, 1, 1)
    assert r1.created_at == 1.0 and r1.status == "processing"
    assert (await owned.run_summary("r2")).tenant_id == "t2"
    assert (await owned.stats()).pending == 2
    # Again: nothing is written twice; another tenant's run is refused, item by item.
    again = await owned.import_jobs([imported("d1:a", attempts=7), imported("d1:e", tenant="t9")])
    assert [(r.origin, r.ok, r.reason) for r in again] == [
        ("d1:a", False, "exists"),
        ("d1:e", False, "refused"),
    ]
    assert again[0].job == a and again[1].message and "belongs to tenant 't1'" in again[1].message
    # Both pending jobs (one per tenant: a fair pull serves each tenant in turn); an imported
    # job's attempts go on from what was imported.
    pulled = {job.origin: job for job in await owned.pull(max=2)}
    assert pulled["d1:d"].id == d.id and pulled["d1:d"].attempts == 1
    with pytest.raises(InvalidArgument, match="status"):
        await owned.import_jobs([imported("d1:x", status="leased")])  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_find_by_origin_returns_the_imported_jobs_in_the_order_asked(
    owned: OwnedQueue,
) -> None:
    a, b = (r.job for r in await owned.import_jobs([imported("kv:a"), imported("kv:b")]))
    await owned.enqueue("r1", "t1", "t1/r1/native")
    assert await owned.find_by_origin(["kv:b", "kv:none", "kv:a", "kv:b"]) == [b, a]
    assert await owned.find_by_origin([]) == []
    with pytest.raises(InvalidArgument, match="origin"):
        await owned.find_by_origin([""])


@pytest.mark.anyio
async def test_delete_imported_removes_only_jobs_unchanged_since_their_import_unless_forced(
    owned: OwnedQueue, clock: FakeClock
) -> None:
    results = await owned.import_jobs(
        [imported("d1:a"), imported("d1:b"), imported("d1:c", run="r2", status="done")]
    )
    a, b, c = (r.job for r in results)
    assert a is not None and b is not None and c is not None
    (leased,) = await owned.pull(max=1)  # a worker takes d1:a: it changed
    assert leased.id == a.id
    gone = await owned.delete_imported(
        [("d1:a", a.updated_at), ("d1:b", b.updated_at), ("d1:c", c.updated_at), ("d1:z", 0.0)]
    )
    assert [(r.origin, r.ok, r.reason) for r in gone] == [
        ("d1:a", False, "changed"),
        ("d1:b", True, "ok"),
        ("d1:c", True, "ok"),
        ("d1:z", False, "not_found"),
    ]
    assert gone[0].message and "changed after it was imported" in gone[0].message
    # The run left without a job goes; the other keeps exact counts.
    with pytest.raises(RunNotFound):
        await owned.run_summary("r2")
    r1 = await owned.run_summary("r1")
    assert (r1.total, r1.leased, r1.pending) == (1, 1, 0)
    forced = await owned.delete_imported([("d1:a", a.updated_at)], force=True)
    assert [(r.ok, r.reason) for r in forced] == [(True, "ok")]
    assert await owned.find_by_origin(["d1:a", "d1:b", "d1:c"]) == []
    with pytest.raises(RunNotFound):
        await owned.run_summary("r1")
    assert (await owned.stats()).total == 0


@pytest.mark.anyio
async def test_closing_a_queue_ends_its_waiting_pulls_with_no_jobs(
    open_owned: Callable[[], contextlib.AbstractAsyncContextManager[OwnedQueue]],
) -> None:
    got: list[list[Job]] = []
    async with open_owned() as queue, anyio.create_task_group() as tg:

        async def pull() -> None:
            got.append(await queue.pull(wait_seconds=MAX_PULL_WAIT_SECONDS))

        tg.start_soon(pull)
        waits = queue._waits  # type: ignore[attr-defined]
        await wait_until(lambda: waits.waiting == 1, "the pull waits")
        await queue.aclose()
    assert got == [[]]


def test_this_suite_calls_every_verb_of_the_contract() -> None:
    """A verb added to the Protocol needs a contract test here, run on every backend."""
    source = Path(__file__).read_text()
    missing = [name for name in verbs(OwnedQueue) if f".{name}(" not in source]
    assert missing == []
