"""The PostgreSQL backend's SQL: one statement per ``sql/*.sql`` file, read at import.

Each file says what its parameters are. A statement that comes in variants (a claim with or
without the expired-lease check, an ack with or without run metrics) is one file per variant:
no statement is assembled from pieces at run time. Job rows come back with the job's columns
in `actors.queue._rows.job_from_row`'s order (a test checks every file that returns them).
"""

from __future__ import annotations

from importlib import resources

__all__ = ["read"]

# Count rows per run (migration 4): one per connection slot, ``pg_backend_pid() % SHARDS`` in
# the statements that add to them, plus one slot of purge's own.
SHARDS = 16
# Purge's slot, which no enqueue or ack uses: purge takes a lock on `runs` after counting, and
# an enqueue holding `runs` while it waited for a shard row purge held would deadlock.
PURGE_SHARD = SHARDS
# Above every job id: the first_id of a run that has no job yet (`store migrate`).
NO_ID = 2**63 - 1


def read(name: str) -> str:
    """Return the text of ``sql/<name>.sql``."""
    return (resources.files("actors.queue.postgres") / "sql" / f"{name}.sql").read_text(
        encoding="utf-8"
    )


# The queue's verbs (`_queue.py`).
CLAIM = read("claim")
CLAIM_FIRST = read("claim_first")
CLAIM_FAIR = read("claim_fair")
CONTROLS_READ = read("controls_read")
CONTROLS_PAUSE = read("controls_pause")
CONTROLS_LIMITS = read("controls_limits")
CONTROLS_PRUNE = read("controls_prune")
CONTROLS_LIST = read("controls_list")
CONTROLS_LOCK = read("controls_lock")
CONTROLS_SPEND = read("controls_spend")
REAP = read("reap")
ENQUEUE = read("enqueue")
ENQUEUE_KEYED = read("enqueue_keyed")
JOBS_BY_KEY = read("jobs_by_key")
RUN_TENANTS = read("run_tenants")
LOWER_FIRST_IDS = read("lower_first_ids")
NOTIFY = read("notify")
RENEW = read("renew")
START = read("start")
RELEASE = read("release")
ACK = read("ack")
ACK_METRICS = read("ack_metrics")
ACK_OWNED = read("ack_owned")
ADD_COUNTS = read("add_counts")
CANCEL = read("cancel")
CANCEL_RUN = read("cancel_run")
REQUEUE = read("requeue")
PURGE = read("purge")
LOCK_RUNS = read("lock_runs")
DELETE_RUNS = read("delete_runs")
MAINTENANCE_CLAIM = read("maintenance_claim")
MAINTENANCE_CREATE = read("maintenance_create")
MAINTENANCE_READ = read("maintenance_read")
SCHEDULE_CREATE = read("schedule_create")
SCHEDULE_COUNT = read("schedule_count")
SCHEDULE_DELETE = read("schedule_delete")
SCHEDULES_LIST = read("schedules_list")
SCHEDULES_DUE = read("schedules_due")
SCHEDULE_ADVANCE = read("schedule_advance")
SCHEDULES_NEXT_DUE = read("schedules_next_due")
IMPORT_JOBS = read("import_jobs")
IMPORT_RUNS = read("import_runs")
JOBS_BY_ORIGIN = read("jobs_by_origin")
DELETE_IMPORTED = read("delete_imported")
GET = read("get")
JOBS_BY_ID = read("jobs_by_id")
STATS = read("stats")
RUNS = read("runs")
LIST_JOBS = read("list_jobs")
CREATE_SCHEMA = read("create_schema")
CURRENT_SCHEMA = read("current_schema")

# A run's state, unfiltered (`schema.RUN_STATE`, read by `actors.queue.migrate`).
RUN_STATE = read("run_state")

# Schema versions and migrations (`schema.py`).
MIGRATION_LOCK = read("migration_lock")
VERSION_TABLE = read("version_table")
VERSION_EXISTS = read("version_exists")
VERSION_READ = read("version_read")
VERSION_CLEAR = read("version_clear")
VERSION_WRITE = read("version_write")
VERSION_DROP = read("version_drop")
COUNT_ROWS = read("count_rows")
