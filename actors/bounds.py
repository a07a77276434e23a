"""Every bound on a value the system accepts, defined once: constants and ``Annotated`` types.

The queue's checks (`actors.queue.base`) refuse a value outside these bounds on every backend;
the wire types (`actors.protocol`) state the same bounds so that the OpenAPI schema shows them
and a bad request is a 400 naming the field before any queue call; the configuration
(`actors.config`) bounds its keys with them, so that no accepted value breaks the system (a
retry base of 1e308 s would schedule a retry in the year 10^307). A bound that only one
configuration key has (how many fetchers, a Gemini knob) stays next to that key in config.py.

This module imports nothing of ours.
"""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta

__all__ = [
    "DAY",
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "HOUR",
    "MAX_ATTEMPTS",
    "MAX_BATCH",
    "MAX_DELAY_SECONDS",
    "MAX_ERROR_CHARS",
    "MAX_ID_CHARS",
    "MAX_IMPORT_BYTES",
    "MAX_JOB_ID",
    "MAX_LEASE_TOKEN_CHARS",
    "MAX_MAINTENANCE_INTERVAL_SECONDS",
    "MAX_METRIC_NAME_CHARS",
    "MAX_PAGE",
    "MAX_PAYLOAD_BYTES_LIMIT",
    "MAX_PRIORITY",
    "MAX_PULL",
    "MAX_PULL_WAITERS",
    "MAX_PULL_WAIT_SECONDS",
    "MAX_RETENTION_SECONDS",
    "MAX_SCHEDULES_PER_TENANT",
    "MAX_TENANT_LEASED",
    "MAX_TENANT_RATE",
    "MAX_TICKS_PER_FIRE",
    "MAX_TIMEOUT_SECONDS",
    "MAX_UPLOAD_NAME_CHARS",
    "MAX_UPLOAD_URL_SECONDS",
    "MAX_VISIBILITY_SECONDS",
    "MAX_WEIGHT",
    "MINUTE",
    "MIN_TENANT_RATE",
    "MIN_TIMEOUT_SECONDS",
    "SCHEDULE_NAME_PATTERN",
    "AckBatch",
    "AckIdText",
    "Attempts",
    "Count",
    "Delay",
    "ErrorText",
    "IdText",
    "Interval",
    "JobId",
    "JobIdText",
    "JobTimeout",
    "LeaseToken",
    "MaintenanceInterval",
    "MetricName",
    "PathText",
    "PerMinute",
    "Port",
    "Priority",
    "PullSize",
    "PullWait",
    "Retention",
    "ScheduleCron",
    "ScheduleGrace",
    "ScheduleInterval",
    "ScheduleName",
    "TenantLeased",
    "TenantRate",
    "TimeZoneName",
    "Timeout",
    "UploadName",
    "UploadUrlSeconds",
    "Visibility",
    "Weight",
]

MINUTE, HOUR, DAY = 60.0, 3600.0, 86_400.0

# --- the queue's bounds ------------------------------------------------------------------------

# 256 KiB, like SQS: a payload describes a job; the document itself lives in the object store.
DEFAULT_MAX_PAYLOAD_BYTES = 256 * 1024
# The largest payload or result limit a queue may be opened with.
MAX_PAYLOAD_BYTES_LIMIT = 64 * 1024 * 1024
# R2 object keys are at most 1024 bytes; run ids, tenant ids, keys and names share the bound.
MAX_ID_CHARS = 1024
# A job's priority lies in -MAX_PRIORITY .. MAX_PRIORITY.
MAX_PRIORITY = 1_000_000
# A job's (or the queue's default) max_attempts lies in 1 .. MAX_ATTEMPTS.
MAX_ATTEMPTS = 1000
# One hour: a longer lease would hide a crashed worker's job for too long; a job that takes
# longer renews its lease while it works.
MAX_VISIBILITY_SECONDS = HOUR
# One day: retries back off for at most 5 minutes; a longer delay is a scheduling job, not ours.
MAX_DELAY_SECONDS = DAY
# One pull leases at most this many jobs; more would hold the write lock for too long.
MAX_PULL = 1000
# A pull waits at most this long for a job to arrive (a long poll): under the idle timeouts of
# common proxies and load balancers (30 s and more), so a waiting pull is not cut off; a worker
# that wants to wait longer pulls again.
MAX_PULL_WAIT_SECONDS = 20.0
# At most this many pulls of one queue object wait at once; a pull beyond them answers at once,
# as a pull that does not wait (every enqueue wakes every waiting pull, which then claims again).
MAX_PULL_WAITERS = 256
# One page of a listing (jobs or runs) holds at most this many items.
MAX_PAGE = 1000
# One batch call (enqueue_many, ack_many, ...) carries at most this many items, for the same
# reason as MAX_PULL.
MAX_BATCH = 10_000
# A dump sent to /api/migrate/* (a D1 export or a KV bulk file): larger ones go through the
# command line (`store import`), which reads a file of any size.
MAX_IMPORT_BYTES = 64 * 1024 * 1024
# A job's own time limit lies in 1 s .. one day (`NewJob.timeout_seconds`).
MIN_TIMEOUT_SECONDS = 1.0
MAX_TIMEOUT_SECONDS = DAY
# A maintenance task (reap, purge) runs at least once a year.
MAX_MAINTENANCE_INTERVAL_SECONDS = 366 * DAY
# Finished jobs are kept (or purged when older than) at most ten years.
MAX_RETENTION_SECONDS = 3650 * DAY
# A tenant has at most this many schedules: each is a row read on every firing round.
MAX_SCHEDULES_PER_TENANT = 1000
# One firing round enqueues at most this many ticks of one schedule (the rest the next round):
# an interval of 1 s with a grace of a day must not enqueue 86,400 jobs in one transaction.
MAX_TICKS_PER_FIRE = 100
# A schedule's name: a URL path segment and a part of its ticks' run ids, so no ':' or '/'.
SCHEDULE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
# Job ids are positive signed 64-bit integers (SQLite's rowid, PostgreSQL's bigint).
MAX_JOB_ID = 2**63 - 1

# --- the wire's bounds (the queue stores these as given) --------------------------------------

# A lease token is 32 hex digits; a longer one cannot be ours.
MAX_LEASE_TOKEN_CHARS = 256
# A failed job's error text.
MAX_ERROR_CHARS = 65_536
# The name of a run metric (`Ack.run_metrics`).
MAX_METRIC_NAME_CHARS = 256
# An uploaded file's name or content type: a file name's limit on most file systems.
MAX_UPLOAD_NAME_CHARS = 255
# A presigned upload URL stays valid at most 7 days (S3's and R2's limit).
MAX_UPLOAD_URL_SECONDS = 7 * DAY

# --- types ---------------------------------------------------------------------------------------

JobId = Annotated[int, Meta(ge=1, le=MAX_JOB_ID)]
# A job id as the seed's client sends it in an ids-only ack: digits in a string (at most 18 of
# them: always below 2**63).
JobIdText = Annotated[str, Meta(pattern=r"^[1-9][0-9]{0,17}$")]
# An id in an ids-only ack sent as a string: a job id's digits, or the id an imported job had in
# the system it came from (its origin, `d1:<id>` or `kv:<id>`, without the prefix).
AckIdText = Annotated[str, Meta(min_length=1, max_length=MAX_ID_CHARS)]
#: A run id, tenant id, object key, idempotency key or worker id.
IdText = Annotated[str, Meta(min_length=1, max_length=MAX_ID_CHARS)]
Priority = Annotated[int, Meta(ge=-MAX_PRIORITY, le=MAX_PRIORITY)]
Attempts = Annotated[int, Meta(ge=1, le=MAX_ATTEMPTS)]
#: A lease's length.
Visibility = Annotated[float, Meta(gt=0, le=MAX_VISIBILITY_SECONDS)]
#: A wait before a job is available, between retries or restarts, or its cap: none to a day.
Delay = Annotated[float, Meta(ge=0, le=MAX_DELAY_SECONDS)]
#: A job's processing time limit.
JobTimeout = Annotated[float, Meta(ge=MIN_TIMEOUT_SECONDS, le=MAX_TIMEOUT_SECONDS)]
#: How many jobs one pull leases.
PullSize = Annotated[int, Meta(ge=1, le=MAX_PULL)]
#: How long a pull may wait for a job when none is available (0: it answers at once).
PullWait = Annotated[float, Meta(ge=0, le=MAX_PULL_WAIT_SECONDS)]
#: How many acks one ack call carries.
AckBatch = Annotated[int, Meta(ge=1, le=MAX_BATCH)]
LeaseToken = Annotated[str, Meta(max_length=MAX_LEASE_TOKEN_CHARS)]
ErrorText = Annotated[str, Meta(max_length=MAX_ERROR_CHARS)]
MetricName = Annotated[str, Meta(max_length=MAX_METRIC_NAME_CHARS)]
#: How long finished jobs are kept (0: forever), or the age past which they are purged.
Retention = Annotated[float, Meta(ge=0, le=MAX_RETENTION_SECONDS)]
#: How often a maintenance task runs (1 ms: faster is a busy loop).
MaintenanceInterval = Annotated[float, Meta(ge=0.001, le=MAX_MAINTENANCE_INTERVAL_SECONDS)]
UploadName = Annotated[str, Meta(min_length=1, max_length=MAX_UPLOAD_NAME_CHARS)]
UploadUrlSeconds = Annotated[float, Meta(gt=0, le=MAX_UPLOAD_URL_SECONDS)]
#: A schedule's name (`SCHEDULE_NAME_PATTERN`).
ScheduleName = Annotated[str, Meta(pattern=SCHEDULE_NAME_PATTERN)]
#: A cron expression: five fields, or six with seconds last (`actors.cron`).
ScheduleCron = Annotated[str, Meta(min_length=1, max_length=256)]
#: An IANA time zone name ("Europe/Berlin"); the longest in the database has 32 characters.
TimeZoneName = Annotated[str, Meta(min_length=1, max_length=64)]
#: A schedule's interval: whole seconds, one second to a year.
ScheduleInterval = Annotated[int, Meta(ge=1, le=366 * 86_400)]
#: How late a tick may be enqueued and still count as on time: none to a day.
ScheduleGrace = Annotated[float, Meta(ge=0, le=DAY)]

# A tenant's share of fair claims: up to this many of its jobs per round.
MAX_WEIGHT = 1000
# A tenant's cap on live leases, across every worker.
MAX_TENANT_LEASED = 1_000_000
# A tenant's cap on jobs leased per second: from one a minute to a million a second.
MIN_TENANT_RATE, MAX_TENANT_RATE = 1 / 60, 1_000_000.0
Weight = Annotated[int, Meta(ge=1, le=MAX_WEIGHT)]
TenantLeased = Annotated[int, Meta(ge=1, le=MAX_TENANT_LEASED)]
TenantRate = Annotated[float, Meta(ge=MIN_TENANT_RATE, le=MAX_TENANT_RATE)]

# --- the configuration's classes of values ------------------------------------------------------

#: How often a loop wakes (polls, reaps): 1 ms (faster is a busy loop) to an hour.
Interval = Annotated[float, Meta(ge=0.001, le=HOUR)]
#: How long one operation may take (a request, a drain): 1 ms to an hour.
Timeout = Annotated[float, Meta(ge=0.001, le=HOUR)]
#: A count of restarts or retries.
Count = Annotated[int, Meta(ge=0, le=10_000)]
#: A budget per minute (requests or tokens).
PerMinute = Annotated[int, Meta(ge=1, le=10**12)]
#: A file system path: not empty, not blank, no NUL byte, within Linux's PATH_MAX.
PathText = Annotated[str, Meta(min_length=1, max_length=4096, pattern=r"^(?=\s*\S)[^\x00]*$")]
Port = Annotated[int, Meta(ge=0, le=65535)]
