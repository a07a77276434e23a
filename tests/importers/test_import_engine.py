"""Importing the Cloudflare queues into each backend: every row with its state, verified, safe to
run again, malformed rows reported while the rest go in, and a rollback that keeps what changed."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
from cloudflare_dumps import T0, d1_json, d1_rows, d1_sql, insert, kv_bulk, kv_task

from actors import importers
from actors.bounds import DEFAULT_MAX_PAYLOAD_BYTES
from actors.errors import DumpUnreadable, RunNotFound
from actors.importers._kv import PRIORITIES
from actors.queue import OwnedQueue

pytestmark = [pytest.mark.anyio, pytest.mark.runtimes("asyncio")]

ROWS = 3000


def bad_rows(good: dict[str, Any]) -> tuple[str, ...]:
    """Four malformed rows, each as a D1 dump can hold it."""
    return (
        insert("jobs", {**good, "id": "job_bad_status", "status": "processing"}),
        insert("jobs", {**good, "id": "job_foreign_key", "r2_key": "globex/elsewhere.pdf"}),
        # NULL in a NOT NULL column: D1 would never have taken it; a hand-edited dump might.
        insert("jobs", {**good, "id": "job_no_tenant", "tenant_id": None}),
        # Cut off mid-row (a truncated copy of the file).
        "INSERT INTO \"jobs\" VALUES('job_cut','r','acme','acme/x','pending',0,NULL,",
    )


async def by_origin(queue: OwnedQueue, origins: list[str]) -> dict[str, Any]:
    found = {}
    for start in range(0, len(origins), 1000):
        for job in await queue.find_by_origin(origins[start : start + 1000]):
            found[job.origin] = job
    return found


@pytest.mark.slow  # a few thousand rows, twice: 2 to 4 s
async def test_a_d1_export_is_imported_row_by_row_verified_and_safe_to_run_again(
    owned: OwnedQueue,
) -> None:
    rows = d1_rows(ROWS)
    good = next(r for r in rows if r["tenant_id"] == "acme")
    source = importers.read_dump("d1", d1_sql(rows, extra=bad_rows(good)).encode())
    report = await importers.run(owned, source, max_payload_bytes=DEFAULT_MAX_PAYLOAD_BYTES)

    assert (report.items, report.migrated, report.imported) == (ROWS + 4, ROWS, 0)
    assert report.conflicts == []
    errors = {p.item: p.message for p in report.errors}
    assert len(errors) == 4, errors
    assert "'processing' is not one of the D1 queue's" in errors["d1:job_bad_status"]
    assert "outside its tenant's prefix 'acme/'" in errors["d1:job_foreign_key"]
    assert any("NOT NULL constraint failed: jobs.tenant_id" in m for m in errors.values())
    assert any("job_cut" in m for m in errors.values())
    leased = sum(r["status"] == "leased" for r in rows)
    assert report.dropped_leases == leased > 0

    # Every row, with its state: leased rows come over pending, their attempts kept.
    jobs = await by_origin(owned, [f"d1:{r['id']}" for r in rows])
    assert len(jobs) == ROWS
    for row in rows:
        job = jobs[f"d1:{row['id']}"]
        want = "pending" if row["status"] == "leased" else row["status"]
        assert (job.run_id, job.tenant_id, job.r2_key) == (
            row["run_id"],
            row["tenant_id"],
            row["r2_key"],
        )
        assert (job.status, job.attempts) == (want, row["attempts"])
        assert (job.created_at, job.updated_at) == (row["created_at"], row["updated_at"])
        assert job.finished_at == (None if want == "pending" else row["updated_at"])
        assert job.lease_token is None and job.max_attempts >= job.attempts
    # The runs' counts are exact, run by run, and so are the queue's.
    by_run: dict[str, Counter[str]] = {}
    for row in rows:
        status = "pending" if row["status"] == "leased" else row["status"]
        by_run.setdefault(row["run_id"], Counter())[status] += 1
    for run_id, counts in by_run.items():
        summary = await owned.run_summary(run_id)
        assert (summary.pending, summary.leased, summary.done, summary.failed) == (
            counts["pending"],
            0,
            counts["done"],
            counts["failed"],
        ), run_id
        assert summary.created_at == min(r["created_at"] for r in rows if r["run_id"] == run_id)
    stats = await owned.stats()
    assert stats.total == ROWS and stats.leased == 0

    # Again: nothing is written twice.
    again = await importers.run(owned, source)
    assert (again.migrated, again.imported, len(again.errors), again.conflicts) == (
        0,
        ROWS,
        4,
        [],
    )
    assert (await owned.stats()).total == ROWS
    # The same rows as `wrangler d1 execute --json` prints them are the same jobs.
    as_json = importers.read_dump("d1", d1_json(rows).encode())
    status = await importers.status(owned, as_json)
    assert (status.imported, status.missing, status.conflicts, status.errors) == (ROWS, 0, [], [])
    assert status.complete


async def test_status_says_what_is_missing_and_what_changed_since_the_import(
    owned: OwnedQueue,
) -> None:
    rows = d1_rows(40)
    source = importers.read_dump("d1", d1_sql(rows).encode())
    before = await importers.status(owned, source)
    assert (before.missing, before.imported, before.complete) == (40, 0, False)
    half = importers.read_dump("d1", d1_sql(rows[:20]).encode())
    await importers.run(owned, half)
    (taken,) = await owned.pull(max=1, visibility_seconds=60)  # a worker starts on one
    assert taken.origin is not None
    after = await importers.status(owned, source)
    assert (after.missing, after.imported, len(after.conflicts)) == (20, 19, 1)
    assert after.conflicts[0].item == taken.origin
    assert "status, attempts" in after.conflicts[0].message
    # A run imports the missing half and leaves the changed job alone.
    report = await importers.run(owned, source)
    assert (report.migrated, report.imported, len(report.conflicts)) == (20, 19, 1)
    assert (await owned.get(taken.id)).status == "leased"


async def test_a_kv_dump_in_both_key_formats_becomes_jobs_with_their_results(
    owned: OwnedQueue,
) -> None:
    dump = kv_bulk(300)
    huge = kv_task("req_huge", 1, "pending", content="x" * (300 * 1024))
    dump.put("queue:task:req_huge", huge)
    dump.put("queue:task:req_broken", "{this is not json")
    dump.put("queue:task:req_odd", kv_task("req_odd", 2, "pending", priority="urgent"))
    pending_list = next(e for e in dump.entries if e["key"] == "orchestrator:pending")
    pending_list["value"] = json.dumps([*json.loads(pending_list["value"]), "req_ghost"])
    source = importers.read_dump("kv", dump.text().encode(), tenant_id="ops", run_id="backlog")
    report = await importers.run(owned, source, max_payload_bytes=DEFAULT_MAX_PAYLOAD_BYTES)

    errors = {p.item: p.message for p in report.errors}
    assert set(errors) == {"kv:req_huge", "kv:req_broken", "kv:req_odd", "kv:req_ghost"}
    assert "over the limit" in errors["kv:req_huge"]
    assert "not JSON" in errors["kv:req_broken"]
    assert "'urgent'" in errors["kv:req_odd"]
    assert "orchestrator:pending" in errors["kv:req_ghost"]
    assert report.migrated == len(dump.expected) and report.conflicts == []
    assert (report.dropped_leases, report.ignored_keys) == (dump.leases, 1)

    jobs = await by_origin(owned, list(dump.expected))
    for origin, (status, result) in dump.expected.items():
        job = jobs[origin]
        assert (job.status, job.result, job.tenant_id, job.run_id) == (
            status,
            result,
            "ops",
            "backlog",
        )
        assert job.r2_key == f"ops/kv/{origin.removeprefix('kv:')}"
        if not origin.startswith("kv:gone_"):  # the task, as stored, is the payload
            assert job.payload["id"] == origin.removeprefix("kv:")
            assert job.created_at == pytest.approx(
                T0 + int(job.payload["content"].split(":")[0].split()[1]) + 0.123
            )
            assert job.priority == PRIORITIES[job.payload["priority"]]
    summary = await owned.run_summary("backlog")
    assert summary.total == len(dump.expected) and summary.tenant_id == "ops"
    status = await importers.status(owned, source, max_payload_bytes=DEFAULT_MAX_PAYLOAD_BYTES)
    assert (status.missing, len(status.errors), status.complete) == (0, 4, True)


async def test_rollback_removes_what_the_import_created_and_keeps_what_changed_unless_forced(
    owned: OwnedQueue,
) -> None:
    rows = [r for r in d1_rows(600) if r["run_id"] in ("run_acme_0", "run_globex_1")]
    source = importers.read_dump("d1", d1_sql(rows).encode())
    assert (await importers.run(owned, source)).migrated == len(rows)
    native = await owned.enqueue("run_acme_0", "acme", "acme/run_acme_0/native.txt")
    (taken,) = await owned.pull(max=1, visibility_seconds=60)
    assert taken.origin is not None and taken.id != native.id

    report = await importers.rollback(owned, source)
    assert (report.removed, report.absent, report.forced) == (len(rows) - 1, 0, 0)
    assert [p.item for p in report.conflicts] == [taken.origin]
    assert "kept" in report.conflicts[0].message
    # A run left without a job goes; one that keeps a job keeps exact counts.
    left = {j.id for j in (await owned.list()).items}
    assert left == {taken.id, native.id}
    for run_id in ("run_acme_0", "run_globex_1"):
        mine = [j for j in (await owned.list(run_id=run_id)).items]
        if not mine:
            with pytest.raises(RunNotFound):
                await owned.run_summary(run_id)
            continue
        summary = await owned.run_summary(run_id)
        assert summary.total == len(mine)
        assert (summary.leased, summary.pending) == (
            sum(j.status == "leased" for j in mine),
            sum(j.status == "pending" for j in mine),
        )

    forced = await importers.rollback(owned, source, force=True)
    assert (forced.removed, forced.forced, forced.absent, forced.conflicts) == (
        1,
        1,
        len(rows) - 1,
        [],
    )
    assert [j.id for j in (await owned.list()).items] == [native.id]
    assert (await owned.stats()).total == 1


async def test_a_dump_that_cannot_be_read_is_one_clear_error() -> None:
    with pytest.raises(DumpUnreadable, match="creates no `jobs` table"):
        importers.read_dump("d1", b"CREATE TABLE users (id TEXT);\n")
    with pytest.raises(DumpUnreadable, match="neither SQL nor JSON"):
        importers.read_dump("d1", b"[{not json")
    with pytest.raises(DumpUnreadable, match="JSON array of"):
        importers.read_dump("kv", b'{"key": "queue:task:1"}')
    with pytest.raises(DumpUnreadable, match="did not succeed"):
        importers.read_dump("d1", b'[{"results": [], "success": false, "meta": {}}]')


async def test_a_dump_cannot_touch_anything_outside_its_own_memory(tmp_path: Any) -> None:
    target = tmp_path / "written.db"
    rows = d1_rows(3)
    extra = (
        f"ATTACH DATABASE '{target}' AS elsewhere;",
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
        "INSERT INTO jobs SELECT 'x' || x, 'r', 'acme', 'acme/k', 'pending', 0, NULL, 1, 1 FROM c;",
        "PRAGMA writable_schema = ON;",
    )
    source = importers.read_dump("d1", d1_sql(rows, extra=extra).encode())
    assert len(source.jobs) == 3
    assert [i.error for i in source.items if i.error and "not a statement" in i.error] != []
    assert sum(1 for i in source.items if i.error) == 3
    assert not target.exists()


async def test_migrating_below_the_origins_keeps_the_imported_jobs_and_up_again_works(
    backend: str, open_owned: Any, tmp_path: Any, request: pytest.FixtureRequest
) -> None:
    source = importers.read_dump("d1", d1_sql(d1_rows(10)).encode())
    async with open_owned() as queue:
        assert (await importers.run(queue, source)).migrated == 10
    if backend == "sqlite":
        from actors.queue.sqlite import schema

        conn = schema.connect(tmp_path / "queue.db")
        below = max(m.version for m in schema.MIGRATIONS if m.version < 9)
        # Only the origins go (and any later migration, undone first): no --force needed,
        # every job stays.
        above = sorted((m.version for m in schema.MIGRATIONS if m.version > below), reverse=True)
        assert above[-1] == 9
        assert schema.migrate_down(conn, tmp_path / "queue.db", below) == above
        assert schema.current_version(conn) == below
        columns = {r[1] for r in conn.execute("PRAGMA table_info(jobs)")}
        assert "origin" not in columns
        assert conn.execute("SELECT count(*) FROM jobs").fetchone()[0] == 10
        conn.close()
    else:
        import asyncpg
        from pg_helpers import PG_DSN

        from actors.queue.postgres import schema as pg

        name = request.getfixturevalue("pg_schema")
        conn = await asyncpg.connect(PG_DSN, server_settings={"search_path": name})
        try:
            below = max(m.version for m in pg.MIGRATIONS if m.version < 10)
            above = sorted((m.version for m in pg.MIGRATIONS if m.version > below), reverse=True)
            assert above[-1] == 10
            assert await pg.migrate_down(conn, "t", below) == above
            assert await pg.current_version(conn) == below
            assert await conn.fetchval("SELECT count(*) FROM jobs") == 10
        finally:
            await conn.close()
    async with open_owned() as queue:  # up again: the column is back, empty
        # The import's record went with the column: a status finds none of the dump's items
        # (a run now would import them again, beside the jobs already there).
        status = await importers.status(queue, source)
        assert (status.missing, status.imported) == (10, 0)
        assert (await queue.stats()).total == 10
        page = await queue.list()
        assert all(job.origin is None for job in page.items)
