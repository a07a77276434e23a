"""The web dashboard under ``/ui``: server-rendered pages over the API's own reads and checks.

Every page reads through the queue contract and the API's resources (`Jobs.read`, `Jobs.page`,
`Runs.read`), and every page and action asks the `Gate` whether the session's principal may
call the API route it mirrors (``stats``, ``list_jobs``, ``requeue``...): the dashboard can
show or do nothing the API would refuse the same token. Templates are Jinja2 with autoescape
on; live parts are HTML fragments rendered by the same templates and pushed as server-sent
events, which ``static/dashboard.js`` swaps in.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
import urllib.parse
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from typing import Any, cast

import anyio
import jinja2
import msgspec
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from actors.http._auth import Gate, Principal
from actors.http._call import read_body
from actors.http._errors import ApiError, mapped
from actors.http._host import Host
from actors.http._jobs import Jobs
from actors.http._operations import set_paused
from actors.http._routes import Route as ApiRoute
from actors.http._routes import route_table
from actors.http._runs import Runs
from actors.http._session import Session, Sessions
from actors.log import get_logger
from actors.queue.base import STATUSES, OwnedQueue
from actors.queue.model import Job, JobStatus, RunSummary, Throughput

__all__ = ["Dashboard"]

log = get_logger("actors.http.ui")

RUN_STATUSES = ("queued", "processing", "done", "failed", "cancelled")
# Rows per page of the runs and jobs tables.
PAGE = 50
# A key filter reads the queue a page at a time (never a whole table): at most this many
# queue pages of this size per dashboard page, then "next" goes on from where it stopped.
_SCAN_PAGE = 200
_SCAN_PAGES = 5
# How often the overview's live region is refreshed, and how long one event stream lasts
# before the browser reconnects (and the session is checked again).
OVERVIEW_SECONDS = 2.0
STREAM_SECONDS = 300.0
# The throughput chart is read at most this often, whoever watches: the read scans an hour of
# finished jobs (about 190 ms at 100,000 on SQLite, docs/benchmarks.md "Dashboard").
THROUGHPUT_SECONDS = 10.0
# Strings and lists in a payload or result longer than these are folded on the job page.
_FOLD_CHARS = 240
_FOLD_ITEMS = 12
# How many of a run's events its page shows.
_RECENT_EVENTS = 12

_COUNT_LABELS = {
    "pending": "Pending, ready",
    "scheduled": "Scheduled",
    "leased": "Leased",
    "done": "Done",
    "failed": "Failed",
    "cancelled": "Cancelled",
}

_SECURITY_HEADERS = {
    # Only this origin's scripts, styles and images; no inline script or style anywhere.
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}

Handler = Callable[[Request, Session], Awaitable[Response]]


class Dashboard:
    """The dashboard's routes over the API's resources, its gate and the session store.

    Error handling: an `ApiError` (from the gate, a check or the queue) is rendered as an error
    page with its status; a missing session sends a page to the sign-in form (an event stream
    answers 401); anything else is a bug, answered 500 and logged with its traceback.
    """

    def __init__(self, host: Host, gate: Gate, jobs: Jobs, runs: Runs, sessions: Sessions) -> None:
        self._host = host
        self._gate = gate
        self._jobs = jobs
        self._runs = runs
        self._sessions = sessions
        self._api: dict[str, ApiRoute[Any]] = {
            r.name: r for r in route_table() if isinstance(r, ApiRoute)
        }
        self._env = jinja2.Environment(
            loader=jinja2.PackageLoader("actors.http", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._env.filters.update(
            when=_when, ago=_ago, duration=_duration, number=_number, metric=_metric
        )
        self._throughput: tuple[float, list[Throughput]] | None = None
        # Static files are named with a hash of their content: a new version is a new URL.
        static = resources.files("actors.http") / "static"
        self._versions = {
            f.name: hashlib.sha256(f.read_bytes()).hexdigest()[:10]
            for f in static.iterdir()
            if f.is_file()
        }

    def routes(self) -> list[BaseRoute]:
        """The dashboard's routes, relative to where it is mounted (``/ui``)."""
        return [
            Route("/", self._page(self.overview), name="overview"),
            Route("/events", self._stream(self.overview_events), name="overview_events"),
            Route("/sign-in", self.sign_in, methods=["GET", "POST"], name="sign_in"),
            Route("/sign-out", self._action(self.sign_out), methods=["POST"], name="sign_out"),
            Route("/runs", self._page(self.runs), name="runs"),
            # Run ids may hold "/": the events route is tried first (a run named ".../events"
            # is shown by the runs list, not at its own address).
            Route("/runs/{run_id:path}/events", self._stream(self.run_events), name="run_events"),
            Route("/runs/{run_id:path}", self._page(self.run), name="run"),
            Route("/jobs", self._page(self.jobs), name="jobs"),
            Route("/jobs/{job_id:int}", self._page(self.job), name="job"),
            Route("/requeue", self._action(self.requeue), methods=["POST"], name="requeue"),
            Route("/purge", self._action(self.purge), methods=["POST"], name="purge"),
            Route("/cancel", self._action(self.cancel), methods=["POST"], name="cancel"),
            Route("/pause", self._action(self.pause), methods=["POST"], name="pause"),
            Route("/resume", self._action(self.resume), methods=["POST"], name="resume"),
            Mount("/static", StaticFiles(packages=[("actors.http", "static")]), name="static"),
            # Anything else under the dashboard is a page that does not exist (not JSON).
            Route("/{rest:path}", self._page(self.not_found), methods=["GET"], name="missing"),
        ]

    # --- the wrappers: sessions, errors, headers ------------------------------------------

    def _page(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            session = self._sessions.read(request)
            if session is None:
                return _secure(RedirectResponse(request.url_for("ui:sign_in"), 303))
            return await self._answer(request, session, handler)

        return endpoint

    def _stream(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            session = self._sessions.read(request)
            if session is None:
                return _secure(Response("sign in again", 401, media_type="text/plain"))
            try:
                return _secure(await handler(request, session))
            except ApiError as exc:
                return _secure(Response(exc.message, exc.status, media_type="text/plain"))
            except Exception:  # a bug: the traceback in the log, nothing in the answer
                log.exception("ui.unhandled", path=request.url.path, method=request.method)
                return _secure(Response("the dashboard failed", 500, media_type="text/plain"))

        return endpoint

    def _action(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """A POST: from a page of this origin, with the session's CSRF token, or 403."""

        async def endpoint(request: Request) -> Response:
            session = self._sessions.read(request)
            try:
                Sessions.check_origin(request)
                if session is None:
                    raise ApiError(401, "signed_out", "your sign-in has ended; sign in again")
                form = await _form(request)
                Sessions.check_csrf(session, form)
            except ApiError as exc:
                return self._error(request, session, exc)
            request.state.form = form
            return await self._answer(request, session, handler)

        return endpoint

    async def _answer(self, request: Request, session: Session, handler: Handler) -> Response:
        try:
            return _secure(await handler(request, session))
        except ApiError as exc:
            return self._error(request, session, exc)
        except Exception:  # a bug: a page without details, the traceback in the log
            log.exception("ui.unhandled", path=request.url.path, method=request.method)
            return self._error(
                request, session, ApiError(500, "internal", "the dashboard failed; see its log")
            )

    def _error(self, request: Request, session: Session | None, exc: ApiError) -> Response:
        title = {401: "Signed out", 403: "Not allowed", 404: "Not found"}.get(
            exc.status, "Something went wrong"
        )
        return self._render(request, session, "error.html", code=exc.status, title=title, error=exc)

    def _render(
        self,
        request: Request,
        session: Session | None,
        template: str,
        *,
        code: int = 200,
        **context: Any,
    ) -> Response:
        url = _url_maker(request)

        def static(name: str) -> str:
            return f"{url('static', path=name)}?v={self._versions.get(name, '0')}"

        html = self._env.get_template(template).render(
            url=url,
            static=static,
            session=session,
            principal=session.principal if session is not None else None,
            now=self._host.clock.time(),
            path=request.url.path,
            **context,
        )
        return _secure(HTMLResponse(html, code))

    def _fragment(self, template: str, request: Request, **context: Any) -> bytes:
        """One server-sent event whose data is a template's HTML, for a live region."""

        url = _url_maker(request)
        html = self._env.get_template(template).render(
            url=url, now=self._host.clock.time(), **context
        )
        return b"event: update\ndata: " + msgspec.json.encode({"html": html}) + b"\n\n"

    def _may(self, principal: Principal, route: str) -> bool:
        return self._gate.permits(principal, self._api[route])

    def _check(self, principal: Principal, route: str) -> None:
        self._gate.check(principal, self._api[route])

    async def not_found(self, request: Request, session: Session) -> Response:
        raise ApiError(404, "not_found", "there is no such page in the dashboard")

    # --- sign-in ---------------------------------------------------------------------------

    async def sign_in(self, request: Request) -> Response:
        if request.method == "GET":
            if self._sessions.read(request) is not None:
                return _secure(RedirectResponse(request.url_for("ui:overview"), 303))
            return self._render(request, None, "sign_in.html", error=None)
        try:
            Sessions.check_origin(request)
        except ApiError as exc:
            return self._error(request, None, exc)
        try:
            form = await _form(request)
        except ApiError as exc:
            return self._error(request, None, exc)
        token = form.get("token")
        principal = (
            self._gate.tokens.lookup(token.strip())
            if isinstance(token, str) and 0 < len(token) <= 4096
            else None
        )
        if principal is None:
            log.info("ui.sign_in_refused")
            return self._render(
                request,
                None,
                "sign_in.html",
                code=401,
                error="That token is not valid here. Use a token from ACTORS_TOKENS "
                "(or JWT_SECRET / EDGE_API_TOKEN).",
            )
        response = RedirectResponse(request.url_for("ui:overview"), 303)
        self._sessions.open(
            principal, response, _cookie_path(request), request.url.scheme == "https"
        )
        log.info("ui.signed_in", token=principal.id, role=principal.role)
        return _secure(response)

    async def sign_out(self, request: Request, session: Session) -> Response:
        response = RedirectResponse(request.url_for("ui:sign_in"), 303)
        self._sessions.end(session, response, _cookie_path(request))
        return response

    # --- overview --------------------------------------------------------------------------

    async def overview(self, request: Request, session: Session) -> Response:
        data = await self._overview_data(session.principal)
        return self._render(
            request,
            session,
            "overview.html",
            may_purge=self._may(session.principal, "purge"),
            may_pause=self._may(session.principal, "pause"),
            **data,
        )

    async def overview_events(self, request: Request, session: Session) -> Response:
        principal = session.principal

        async def stream() -> AsyncIterator[bytes]:
            yield b"retry: 3000\n\n"
            deadline = time.monotonic() + STREAM_SECONDS
            while time.monotonic() < deadline:
                await anyio.sleep(OVERVIEW_SECONDS)
                data = await self._overview_data(principal)
                yield self._fragment("_overview_live.html", request, **data)

        return _event_stream(stream())

    async def _overview_data(self, principal: Principal) -> dict[str, Any]:
        queue = self._host.queue
        now = self._host.clock.time()
        wide = self._may(principal, "stats")
        scheduled: int | None = None
        oldest: float | None = None
        if wide:
            stats = await mapped(queue.stats())
            counts = {
                "pending": stats.pending - stats.scheduled,
                "scheduled": stats.scheduled,
                "leased": stats.leased,
                "done": stats.done,
                "failed": stats.failed,
                "cancelled": stats.cancelled,
            }
            scheduled = stats.scheduled
            oldest = stats.oldest_pending_age_seconds
        else:
            # A tenant's own figures: its latest runs' counts (the queue-wide ones span every
            # tenant, which the API's stats route refuses such a token too).
            counts = {"pending": 0, "leased": 0, "done": 0, "failed": 0, "cancelled": 0}
            if isinstance(queue, OwnedQueue):
                page = await mapped(
                    queue.list_runs(principal.tenant, limit=PAGE, newest_first=True)
                )
                for run in page.items:
                    for name in counts:
                        counts[name] += getattr(run, name)
        chart = None
        if wide and isinstance(queue, OwnedQueue):
            cached = self._throughput
            if cached is None or not 0 <= now - cached[0] < THROUGHPUT_SECONDS:
                cached = (now, await mapped(queue.throughput(max(0.0, now - 3600))))
                self._throughput = cached
            chart = _chart(cached[1], now)
        leased = await self._jobs.page(principal, "leased", None, None, 1000, None)
        workers: dict[str, dict[str, Any]] = {}
        for job in leased.items:
            name = job.worker_id or job.lease_owner or "in-process"
            seen = workers.setdefault(name, {"name": name, "jobs": 0, "until": 0.0})
            seen["jobs"] += 1
            seen["until"] = max(seen["until"], job.lease_expires_at or 0.0)
        return {
            "labels": _COUNT_LABELS,
            "runs_counted": PAGE,
            "wide": wide,
            "counts": counts,
            "scheduled": scheduled,
            "oldest": oldest,
            "chart": chart,
            "workers": sorted(workers.values(), key=lambda w: -w["jobs"]),
            "workers_more": leased.next_cursor is not None,
            "paused": await self._paused(principal),
        }

    async def _paused(self, principal: Principal) -> dict[str, Any] | None:
        """What is paused, as ``GET /queue/controls`` shows it to the principal (None when it
        may not read the controls): the whole queue (None for a tenant's admin, which may
        not see it) and the paused tenants; ``tenant`` is the one a tenant's admin may
        pause or resume."""
        if not self._may(principal, "controls"):
            return None
        controls = await mapped(self._host.queue.controls())
        scope = principal.tenant
        return {
            "queue": controls.paused if scope is None else None,
            "tenants": [
                t.tenant_id
                for t in controls.tenants
                if t.paused and (scope is None or t.tenant_id == scope)
            ],
            "tenant": scope,
        }

    # --- runs ------------------------------------------------------------------------------

    async def runs(self, request: Request, session: Session) -> Response:
        principal = session.principal
        self._check(principal, "get_run")
        query = request.query_params
        tenant = _text(query.get("tenant")) if principal.tenant is None else principal.tenant
        status = query.get("status") or None
        if status not in (None, "queued", "processing", "done", "failed"):
            raise ApiError(
                400, "invalid_field", "status must be queued, processing, done or failed"
            )
        cursor = _cursor(query.get("cursor"))
        queue = self._host.queue
        if not isinstance(queue, OwnedQueue):
            raise ApiError(
                501, "not_here", "this server reaches its queue over HTTP and cannot list runs"
            )
        # A status filter reads pages of the newest-first listing until one is full.
        items: list[RunSummary] = []
        next_cursor = cursor
        for _ in range(_SCAN_PAGES if status else 1):
            page = await mapped(
                queue.list_runs(tenant, limit=PAGE, cursor=next_cursor, newest_first=True)
            )
            items += [r for r in page.items if status is None or r.status == status]
            next_cursor = page.next_cursor
            if next_cursor is None or len(items) >= PAGE:
                break
        return self._render(
            request,
            session,
            "runs.html",
            runs=items,
            tenant=tenant or "",
            status=status or "",
            statuses=RUN_STATUSES,
            cursor=cursor,
            next_cursor=next_cursor,
        )

    async def run(self, request: Request, session: Session) -> Response:
        principal = session.principal
        self._check(principal, "get_run")
        run_id = request.path_params["run_id"]
        summary = await self._runs.read(run_id, principal)
        jobs = await self._jobs.page(principal, None, run_id, None, PAGE, None)
        return self._render(
            request,
            session,
            "run.html",
            run=summary,
            progress=_progress(summary, self._host.clock.time(), None),
            events=[],
            jobs=jobs.items,
            more_jobs=jobs.next_cursor is not None,
            selectable=False,
            show_run=False,
            may_requeue=self._may(principal, "requeue"),
            may_cancel=self._may(principal, "cancel_run"),
        )

    async def run_events(self, request: Request, session: Session) -> Response:
        """The run's progress fragment after every update of its room, until it ends."""
        principal = session.principal
        self._check(principal, "run_events")
        run_id = request.path_params["run_id"]
        last = await self._runs.read(run_id, principal)  # another tenant's: 404

        async def stream() -> AsyncIterator[bytes]:
            nonlocal last
            events: deque[dict[str, Any]] = deque(maxlen=_RECENT_EVENTS)
            # (when, finished) samples of the last 30 s: the rate is measured over them.
            samples: deque[tuple[float, int]] = deque()
            yield b"retry: 3000\n\n"
            with anyio.move_on_after(STREAM_SECONDS):
                async with contextlib.aclosing(self._host.watch_run(run_id)) as updates:
                    async for update in updates:
                        if update.summary is not None:
                            last = update.summary
                        now = self._host.clock.time()
                        samples.append((now, last.done + last.failed))
                        while samples and samples[0][0] < now - 30:
                            samples.popleft()
                        for event in update.events:
                            events.appendleft(
                                {
                                    "kind": event.kind,
                                    "jobs": list(event.job_ids[:8]),
                                    "more": max(0, len(event.job_ids) - 8),
                                    "at": event.at,
                                    "error": event.error,
                                }
                            )
                        yield self._fragment(
                            "_run_live.html",
                            request,
                            run=last,
                            progress=_progress(last, now, samples),
                            events=list(events),
                        )
            yield b"event: end\ndata: {}\n\n"

        return _event_stream(stream())

    # --- jobs ------------------------------------------------------------------------------

    async def jobs(self, request: Request, session: Session) -> Response:
        principal = session.principal
        self._check(principal, "list_jobs")
        query = request.query_params
        status = query.get("status") or None
        if status is not None and status not in STATUSES:
            raise ApiError(400, "invalid_field", f"status must be one of {', '.join(STATUSES)}")
        run_id = _text(query.get("run"))
        tenant = _text(query.get("tenant")) if principal.tenant is None else None
        key = (query.get("key") or "").strip()[:1024]
        cursor = _cursor(query.get("cursor"))
        items: list[Job] = []
        next_cursor = cursor
        for _ in range(_SCAN_PAGES if key else 1):
            page = await self._jobs.page(
                principal,
                cast("JobStatus | None", status),
                run_id,
                tenant,
                _SCAN_PAGE if key else PAGE,
                next_cursor,
            )
            items += [j for j in page.items if key in j.r2_key] if key else page.items
            next_cursor = page.next_cursor
            if next_cursor is None or len(items) >= PAGE:
                break
        return self._render(
            request,
            session,
            "jobs.html",
            jobs=items,
            status=status or "",
            run_id=run_id or "",
            tenant=tenant or "",
            key=key,
            cursor=cursor,
            next_cursor=next_cursor,
            statuses=STATUSES,
            selectable=self._may(principal, "requeue") or self._may(principal, "cancel_jobs"),
            may_requeue=self._may(principal, "requeue"),
            may_cancel=self._may(principal, "cancel_jobs"),
            show_run=True,
        )

    async def job(self, request: Request, session: Session) -> Response:
        principal = session.principal
        self._check(principal, "get_job")
        job = await self._jobs.read(principal, request.path_params["job_id"])
        payload, payload_folds = _fold(job.payload)
        result, result_folds = _fold(job.result)
        return self._render(
            request,
            session,
            "job.html",
            job=job,
            payload=_pretty(payload),
            payload_folds=payload_folds,
            result=_pretty(result),
            result_folds=result_folds,
            document=_document(job.result),
            may_requeue=self._may(principal, "requeue"),
            may_cancel=self._may(principal, "cancel_job"),
        )

    # --- actions ---------------------------------------------------------------------------

    async def requeue(self, request: Request, session: Session) -> Response:
        """Requeue failed jobs: one, those selected, or all of a run; confirm first."""
        self._check(session.principal, "requeue")
        form: FormData = request.state.form
        ids = _ids(form.getlist("job"))
        run_field = form.get("run")
        run_id = _text(run_field if isinstance(run_field, str) else None)
        back: tuple[str, dict[str, Any]]
        if run_id is not None and not ids:
            summary = await self._runs.read(run_id, session.principal)
            what = f"the {summary.failed} failed jobs of run {run_id}"
            back = ("run", {"run_id": run_id})
        elif ids and run_id is None:
            what = f"job {ids[0]}" if len(ids) == 1 else f"the {len(ids)} selected jobs"
            back = ("job", {"job_id": ids[0]}) if len(ids) == 1 else ("jobs", {})
        else:
            raise ApiError(400, "invalid_field", "choose the jobs to requeue, or a run")
        if form.get("confirmed") != "yes":
            return self._render(
                request,
                session,
                "confirm.html",
                action="requeue",
                title="Requeue failed jobs",
                question=f"Return {what} to pending? Only failed jobs change; each gets its "
                "attempts back and runs again.",
                fields=[("job", str(i)) for i in ids] + ([("run", run_id)] if run_id else []),
                button="Requeue",
                back=back,
            )
        count = await mapped(
            self._host.queue.requeue(ids or None, run_id=run_id if not ids else None)
        )
        log.info("ui.requeued", token=session.principal.id, count=count, run_id=run_id)
        return self._render(
            request,
            session,
            "report.html",
            title="Requeued",
            report=f"Requeued {count} failed job{'' if count == 1 else 's'} of {what}; "
            "they are pending again.",
            back=back,
        )

    async def purge(self, request: Request, session: Session) -> Response:
        """Delete finished jobs older than the age chosen; confirm first."""
        self._check(session.principal, "purge")
        form: FormData = request.state.form
        raw = form.get("older_than")
        if not isinstance(raw, str) or not raw.isdigit() or int(raw) > 10 * 365 * 86400:
            raise ApiError(400, "invalid_field", "choose how old finished jobs must be")
        seconds = int(raw)
        age = _duration(seconds) if seconds else "any age"
        back: tuple[str, dict[str, Any]] = ("overview", {})
        if form.get("confirmed") != "yes":
            return self._render(
                request,
                session,
                "confirm.html",
                action="purge",
                title="Purge finished jobs",
                question=f"Delete every done and failed job that finished {age} ago or more, "
                "with its result? This cannot be undone.",
                fields=[("older_than", raw)],
                button="Purge",
                back=back,
            )
        count = await mapped(self._host.queue.purge(seconds))
        log.info("ui.purged", token=session.principal.id, count=count, older_than=seconds)
        return self._render(
            request,
            session,
            "report.html",
            title="Purged",
            report=f"Deleted {count} finished job{'' if count == 1 else 's'} older than {age}.",
            back=back,
        )

    async def cancel(self, request: Request, session: Session) -> Response:
        """Cancel unfinished jobs: one, those selected, or all of a run; confirm first."""
        principal = session.principal
        form: FormData = request.state.form
        ids = _ids(form.getlist("job"))
        run_field = form.get("run")
        run_id = _text(run_field if isinstance(run_field, str) else None)
        back: tuple[str, dict[str, Any]]
        if run_id is not None and not ids:
            self._check(principal, "cancel_run")
            summary = await self._runs.read(run_id, principal)  # another tenant's: 404
            unfinished = summary.pending + summary.leased
            what = f"the {unfinished} unfinished jobs of run {run_id}"
            back = ("run", {"run_id": run_id})
        elif len(ids) == 1 and run_id is None:
            self._check(principal, "cancel_job")
            await self._jobs.read(principal, ids[0])  # another tenant's: 404
            what = f"job {ids[0]}"
            back = ("job", {"job_id": ids[0]})
        elif ids and run_id is None:
            self._check(principal, "cancel_jobs")
            what = f"the {len(ids)} selected jobs"
            back = ("jobs", {})
        else:
            raise ApiError(400, "invalid_field", "choose the jobs to cancel, or a run")
        if form.get("confirmed") != "yes":
            return self._render(
                request,
                session,
                "confirm.html",
                action="cancel",
                title="Cancel jobs",
                question=f"Cancel {what}? Pending jobs are cancelled now, leased ones when "
                "their workers stop; finished jobs do not change. This cannot be undone.",
                fields=[("job", str(i)) for i in ids] + ([("run", run_id)] if run_id else []),
                button="Cancel jobs",
                back_label="Keep them",
                back=back,
            )
        if run_id is not None:
            outcome = await self._runs.cancel(run_id, principal)
            cancelled, requested, refused = outcome.cancelled, outcome.cancel_requested, 0
        else:
            results = await self._jobs.cancel(principal, ids, None, one=len(ids) == 1)
            done = [r for r in results if r.ok]
            cancelled = sum(1 for r in done if r.job is not None and r.job.status == "cancelled")
            requested = len(done) - cancelled
            refused = len(results) - len(done)
        log.info(
            "ui.cancelled",
            token=principal.id,
            cancelled=cancelled,
            requested=requested,
            run_id=run_id,
        )
        report = f"Of {what}: cancelled {cancelled}; {requested} leased end cancelled when "
        report += "their workers stop"
        if refused:
            report += f"; {refused} not changed (already finished, or not found)"
        return self._render(
            request, session, "report.html", title="Cancelled", report=report + ".", back=back
        )

    async def pause(self, request: Request, session: Session) -> Response:
        return await self._set_paused(request, session, paused=True)

    async def resume(self, request: Request, session: Session) -> Response:
        return await self._set_paused(request, session, paused=False)

    async def _set_paused(self, request: Request, session: Session, *, paused: bool) -> Response:
        """Pause or resume the whole queue or one tenant, as the API allows; confirm first."""
        verb = "pause" if paused else "resume"
        self._check(session.principal, verb)
        form: FormData = request.state.form
        field = form.get("tenant")
        tenant = _text(field if isinstance(field, str) else None)
        if tenant is not None and len(tenant) > 1024:
            raise ApiError(400, "invalid_field", "a tenant id is 1 to 1024 characters")
        what = "the whole queue" if tenant is None else f"tenant {tenant}"
        back: tuple[str, dict[str, Any]] = ("overview", {})
        if form.get("confirmed") != "yes":
            question = (
                f"Pause {what}? Nothing new is leased from it until it is resumed; leased "
                "jobs finish."
                if paused
                else f"Resume {what}? Its pending jobs are leased again."
            )
            return self._render(
                request,
                session,
                "confirm.html",
                action=verb,
                title=f"{verb.capitalize()} {what}",
                question=question,
                fields=[("tenant", tenant)] if tenant is not None else [],
                button=verb.capitalize(),
                back=back,
            )
        controls = await set_paused(self._host.queue, session.principal, tenant, paused)
        log.info(f"ui.{verb}d", token=session.principal.id, tenant=tenant)
        now_paused = (
            controls.paused
            if tenant is None
            else any(t.paused for t in controls.tenants if t.tenant_id == tenant)
        )
        return self._render(
            request,
            session,
            "report.html",
            title="Paused" if paused else "Resumed",
            report=f"{what[0].upper()}{what[1:]} is {'paused' if now_paused else 'running'}.",
            back=back,
        )


# --- helpers: rendering values --------------------------------------------------------------


def _secure(response: Response) -> Response:
    for name, value in _SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def _event_stream(body: AsyncIterator[bytes]) -> Response:
    return StreamingResponse(
        body,
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )


# The dashboard's forms are small: ids of at most a page or two of jobs.
_FORM_BYTES = 64 * 1024


async def _form(request: Request) -> FormData:
    """The request's URL-encoded form (what a browser posts), within `_FORM_BYTES`."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise ApiError(415, "not_a_form", "post the dashboard's own forms")
    body = await read_body(request, _FORM_BYTES)
    try:
        fields: list[tuple[str, str | UploadFile]] = []
        fields += urllib.parse.parse_qsl(
            body.decode(), keep_blank_values=True, strict_parsing=False, max_num_fields=2000
        )
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, "bad_form", "the form could not be read") from None
    return FormData(fields)


def _url_maker(request: Request) -> Callable[..., str]:
    """``url(name, **params)``: the path of a dashboard route, its parameters percent-encoded
    (a run id may hold "/", "?" or "#")."""

    def url(name: str, /, **params: Any) -> str:
        quoted = {
            k: urllib.parse.quote(v, safe="/") if isinstance(v, str) else v
            for k, v in params.items()
        }
        return str(request.url_for(f"ui:{name}", **quoted).path)

    return url


def _cookie_path(request: Request) -> str:
    """The dashboard's own path (``/ui`` where mounted there): the cookie goes nowhere else."""
    return str(request.url_for("ui:overview").path).rstrip("/") or "/"


def _text(value: str | None) -> str | None:
    value = (value or "").strip()
    return value[:1024] if value else None


def _cursor(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    if not value.isdigit() or len(value) > 18:
        raise ApiError(400, "invalid_field", "cursor must come from a 'next page' link")
    return value


def _ids(values: list[Any]) -> list[int]:
    ids = []
    for value in values[:1000]:
        if not isinstance(value, str) or not value.isdigit() or not 1 <= int(value) < 2**63:
            raise ApiError(400, "invalid_field", "job ids are whole numbers")
        ids.append(int(value))
    return ids


def _progress(
    run: RunSummary, now: float, samples: deque[tuple[float, int]] | None
) -> dict[str, Any]:
    """The figures of a run's progress bar: finished share, rate per second, ETA."""
    finished = run.done + run.failed
    remaining = max(0, run.total - finished)
    rate: float | None = None
    if samples is not None and len(samples) >= 2 and samples[-1][0] > samples[0][0]:
        rate = (samples[-1][1] - samples[0][1]) / (samples[-1][0] - samples[0][0])
    if not rate:
        end = run.finished_at if run.finished_at is not None else now
        elapsed = end - run.created_at
        rate = finished / elapsed if elapsed > 0 and finished else None
    eta = math.ceil(remaining / rate) if rate and remaining else None
    percent = 100.0 * finished / run.total if run.total else 0.0
    return {
        "finished": finished,
        "remaining": remaining,
        "percent": percent,
        "rate": rate,
        "eta": eta,
        "ended": run.status in ("done", "failed"),
    }


def _chart(buckets: list[Throughput], now: float) -> dict[str, Any]:
    """The last hour's throughput as 60 bars (done stacked on failed), scaled to the busiest."""
    this_minute = math.floor(now / 60) * 60
    by_minute = {b.minute: b for b in buckets}
    bars = []
    for i in range(60):
        minute = this_minute - (59 - i) * 60
        b = by_minute.get(minute)
        bars.append((minute, b.done if b else 0, b.failed if b else 0))
    peak = max((d + f for _, d, f in bars), default=0)
    height = 100.0
    scale = height / peak if peak else 0.0
    out = []
    for i, (minute, done, failed) in enumerate(bars):
        done_h, failed_h = done * scale, failed * scale
        out.append(
            {
                "x": i * 10,
                "minute": minute,
                "done": done,
                "failed": failed,
                "done_y": height - done_h,
                "done_h": done_h,
                "failed_y": height - done_h - failed_h,
                "failed_h": failed_h,
            }
        )
    return {
        "bars": out,
        "peak": peak,
        "done": sum(d for _, d, _ in bars),
        "failed": sum(f for _, _, f in bars),
        "height": height,
    }


def _document(result: object) -> dict[str, Any] | None:
    """An extracted document's summary as text (the offline processor's result), or None."""
    if not isinstance(result, dict):
        return None
    summary = result.get("summary")
    sentences = (
        [summary]
        if isinstance(summary, str)
        else [s for s in summary if isinstance(s, str)]
        if isinstance(summary, list)
        else []
    )
    title = result.get("title")
    if not sentences and not isinstance(title, str):
        return None
    keywords = result.get("keywords")
    facts = []
    for name, unit in (("kind", ""), ("pages", " pages"), ("bytes", " bytes")):
        value = result.get(name)
        if isinstance(value, str | int) and not isinstance(value, bool):
            facts.append(f"{_number(value) if isinstance(value, int) else value}{unit}")
    chunks = result.get("chunks")
    if isinstance(chunks, list):
        facts.append(f"{len(chunks)} chunk{'' if len(chunks) == 1 else 's'}")
    return {
        "title": title if isinstance(title, str) else None,
        "summary": sentences,
        "keywords": [k for k in keywords if isinstance(k, str)][:20]
        if isinstance(keywords, list)
        else [],
        "facts": facts,
    }


def _fold(value: object, path: str = "$") -> tuple[object, list[tuple[str, str]]]:
    """``value`` with long strings and lists shortened, and the folded parts by path."""
    folds: list[tuple[str, str]] = []

    def walk(v: object, at: str) -> object:
        if isinstance(v, str) and len(v) > _FOLD_CHARS:
            folds.append((at, v))
            return f"{v[:_FOLD_CHARS]}… ({len(v)} characters; shown in full below)"
        if isinstance(v, dict):
            return {k: walk(x, f"{at}.{k}") for k, x in v.items()}
        if isinstance(v, list):
            head = [walk(x, f"{at}[{i}]") for i, x in enumerate(v[:_FOLD_ITEMS])]
            if len(v) > _FOLD_ITEMS:
                folds.append((at, _pretty(v)))
                head.append(f"… {len(v) - _FOLD_ITEMS} more items (shown in full below)")
            return head
        return v

    return walk(value, path), folds


def _pretty(value: object) -> str:
    if value is None:
        return ""
    return msgspec.json.format(msgspec.json.encode(value), indent=2).decode()


def _when(at: float | None) -> str:
    if at is None:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = max(0.0, seconds)
    if seconds < 1:
        return "under 1 s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _ago(at: float | None, now: float) -> str:
    return "—" if at is None else f"{_duration(now - at)} ago"


def _number(value: float | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value):,}".replace(",", "\u202f")
    return f"{value:,.2f}".replace(",", "\u202f")


def _metric(value: float, name: str) -> str:
    if "bytes" in name and value >= 1024:
        for unit in ("KiB", "MiB", "GiB", "TiB"):
            value /= 1024
            if value < 1024:
                return f"{value:.1f} {unit}"
    return _number(value)
