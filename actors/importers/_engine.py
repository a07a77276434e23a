"""The import itself, over the queue's import verbs: compare (`status`), import and verify
(`run`), and remove what an import created (`rollback`), batch by batch.

Invariant: an item counts as migrated only once it was written, committed, read back and
found equal, field by field, to the dump's row. Running again is safe: a job already there as
the dump has it is skipped; one that is there but different (its workers ran it since, or the
dump changed) is a conflict, left alone. A rollback deletes a job only while it is still as the
import wrote it (`OwnedQueue.delete_imported` checks its ``updated_at`` in the deleting
transaction), unless forced.

Error handling: each item's failure (malformed, refused, read back different) is a `Problem` in
the `Report`, and the import goes on; only a failure of the queue itself (unreachable, closed)
raises, after every batch before it was committed: running again resumes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from actors.bounds import MAX_BATCH
from actors.errors import InvalidArgument
from actors.importers._items import Action, Problem, Report, Source, differences
from actors.queue.base import OwnedQueue, check_imported
from actors.queue.model import ImportedJob, Job

__all__ = ["BATCH", "new_report", "rollback", "run", "status", "status_of_nothing"]

#: Items per transaction (and per read-back).
BATCH = 500


def _report(source: Source, action: Action) -> Report:
    report = Report(
        source=source.kind,
        action=action,
        items=len(source.items),
        dropped_leases=source.dropped_leases,
        ignored_keys=source.ignored_keys,
    )
    if action != "rollback":  # a malformed item was never imported: nothing to remove
        for item in source.items:
            if item.error is not None:
                report.errors.append(Problem(item.origin, item.error))
    return report


def _batches(source: Source, size: int) -> Iterator[list[ImportedJob]]:
    jobs = source.jobs
    size = max(1, min(size, MAX_BATCH))
    for start in range(0, len(jobs), size):
        yield jobs[start : start + size]


async def _found(queue: OwnedQueue, jobs: Sequence[ImportedJob]) -> dict[str, Job]:
    return {
        job.origin: job
        for job in await queue.find_by_origin([j.origin for j in jobs])
        if job.origin is not None
    }


def _conflict(job: ImportedJob, there: Job, fields: list[str], what: str) -> Problem:
    return Problem(
        job.origin,
        f"job {there.id} differs from the dump in {', '.join(fields)} (here: {there.status}, "
        f"{there.attempts} attempt(s); in the dump: {job.status}, {job.attempts}): changed "
        f"since it was imported, or the dump changed; {what}",
    )


async def status(
    queue: OwnedQueue,
    source: Source,
    *,
    batch: int = BATCH,
    max_payload_bytes: int | None = None,
) -> Report:
    """Compare the dump with the queue, item by item; change nothing."""
    report = _report(source, "status")
    for jobs in _batches(source, batch):
        found = await _found(queue, jobs)
        for job in jobs:
            there = found.get(job.origin)
            if there is None:
                if (problem := _unfit(job, max_payload_bytes)) is not None:
                    report.errors.append(problem)  # a run could not import it either
                else:
                    report.missing += 1
            elif fields := differences(job, there):
                report.conflicts.append(_conflict(job, there, fields, "a run leaves it alone"))
            else:
                report.imported += 1
    return report


def status_of_nothing(source: Source, *, max_payload_bytes: int | None = None) -> Report:
    """`status` against a queue that does not exist yet: every job of the dump is missing."""
    report = _report(source, "status")
    for job in source.jobs:
        if (problem := _unfit(job, max_payload_bytes)) is not None:
            report.errors.append(problem)
        else:
            report.missing += 1
    return report


async def run(
    queue: OwnedQueue,
    source: Source,
    *,
    batch: int = BATCH,
    max_payload_bytes: int | None = None,
    report: Report | None = None,
) -> Report:
    """Import every job of the dump not in the queue yet; verify each once committed.

    Pass ``report`` (from `new_report`) to watch it fill. ``max_payload_bytes``: the queue's
    limit, so that an item over it is reported alone instead of refusing its batch.
    """
    report = _report(source, "run") if report is None else report
    for jobs in _batches(source, batch):
        found = await _found(queue, jobs)
        todo: list[ImportedJob] = []
        for job in jobs:
            there = found.get(job.origin)
            if there is None:
                if (problem := _unfit(job, max_payload_bytes)) is not None:
                    report.errors.append(problem)
                else:
                    todo.append(job)
            elif fields := differences(job, there):
                report.conflicts.append(_conflict(job, there, fields, "left alone"))
            else:
                report.imported += 1
        if not todo:
            continue
        written: list[ImportedJob] = []
        for job, result in zip(todo, await queue.import_jobs(todo), strict=True):
            if result.ok:
                written.append(job)
            elif result.reason == "exists" and result.job is not None:
                # Imported meanwhile by another run: as good as skipped when it is the same.
                if fields := differences(job, result.job):
                    report.conflicts.append(_conflict(job, result.job, fields, "left alone"))
                else:
                    report.imported += 1
            else:
                report.errors.append(Problem(job.origin, result.message or result.reason))
        # Verify: read each written job back after the commit, and compare it with the dump.
        back = await _found(queue, written)
        for job in written:
            there = back.get(job.origin)
            if there is None:
                report.errors.append(
                    Problem(job.origin, "written, but not found when read back; run it again")
                )
            elif fields := differences(job, there):
                report.errors.append(
                    Problem(job.origin, f"read back different in {', '.join(fields)}")
                )
            else:
                report.migrated += 1
    return report


def _unfit(job: ImportedJob, max_payload_bytes: int | None) -> Problem | None:
    """What the queue would refuse in this job (so it fails alone, not its whole batch)."""
    try:
        check_imported(job, max_payload_bytes or 2**62)
    except InvalidArgument as exc:
        return Problem(job.origin, str(exc))
    return None


async def rollback(
    queue: OwnedQueue, source: Source, *, force: bool = False, batch: int = BATCH
) -> Report:
    """Delete the dump's jobs from the queue: each one still as the import wrote it, or any with
    ``force``; one that changed since is a conflict, kept."""
    report = _report(source, "rollback")
    for jobs in _batches(source, batch):
        found = await _found(queue, jobs)
        unchanged: list[tuple[str, float]] = []
        changed: list[tuple[str, float]] = []
        for job in jobs:
            there = found.get(job.origin)
            if there is None:
                report.absent += 1
            elif fields := differences(job, there):
                if force:
                    changed.append((job.origin, there.updated_at))
                else:
                    report.conflicts.append(
                        _conflict(job, there, fields, "kept; --force deletes it anyway")
                    )
            else:
                unchanged.append((job.origin, there.updated_at))
        for chosen, forced in ((unchanged, False), (changed, True)):
            if not chosen:
                continue
            for result in await queue.delete_imported(chosen, force=forced):
                if result.ok:
                    report.removed += 1
                    report.forced += forced
                elif result.reason == "not_found":
                    report.absent += 1
                else:  # changed between the read and the delete
                    report.conflicts.append(
                        Problem(result.origin, result.message or "changed since it was imported")
                    )
    return report


def new_report(source: Source, action: Action) -> Report:
    """An empty report for ``action`` on ``source``, to pass to `run` and watch it fill."""
    return _report(source, action)
