"""The dashboard over real sockets, without a browser: sign-in, cookies, CSRF and Origin checks,
roles and tenants, escaping, confirmation and reports, session keys; and that a build ships its
templates and static files. The browser's view is tests/http/test_ui_browser.py."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from http_helpers import ACME, ADMIN, PRODUCER, TOKENS, WORKER, auth
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount
from test_http_api import make_config

from actors.config import Secret, Secrets
from actors.errors import ConfigError
from actors.http import Tokens, create_app
from actors.http._session import COOKIE, Sessions
from actors.system import ActorSystem
from supervisors.clock import FakeClock

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[2]


class Browser:
    """An HTTP client that keeps cookies and sends the Origin a browser sends."""

    def __init__(self, client: httpx.AsyncClient, base: str) -> None:
        self.client = client
        self.base = base

    async def sign_in(self, token: str) -> str:
        r = await self.post("/ui/sign-in", {"token": token})
        assert r.status_code == 303, r.text
        return await self.csrf()

    async def csrf(self) -> str:
        page = (await self.client.get("/ui/")).text
        match = re.search(r'name="csrf" value="([^"]+)"', page)
        assert match, page
        return match[1]

    async def post(
        self, path: str, form: dict[str, Any], origin: str | None = "same"
    ) -> httpx.Response:
        headers = {"origin": self.base if origin == "same" else origin} if origin else {}
        return await self.client.post(path, data=form, headers=headers)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[ActorSystem, Browser]]:
    async with ActorSystem(make_config(tmp_path)) as system:
        base = f"http://127.0.0.1:{system.http.port}"
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            yield system, Browser(client, base)


async def failed_job(client: httpx.AsyncClient, run: str = "r1", tenant: str = "t1") -> int:
    """A job failed for good, the way a worker fails one over the API."""
    body = {"runId": run, "tenantId": tenant, "r2Key": f"{tenant}/{run}/a.txt", "maxAttempts": 1}
    enqueued = await client.post("/jobs/enqueue", json=body, headers=auth(ADMIN))
    job_id = int(enqueued.json()["jobId"])
    pulled = await client.post("/jobs/pull", json={"max": 1}, headers=auth(WORKER))
    (job,) = pulled.json()["jobs"]
    assert int(job["id"]) == job_id
    acked = await client.post(
        "/jobs/ack",
        json={
            "acks": [
                {
                    "id": job_id,
                    "leaseToken": job["leaseToken"],
                    "status": "failed",
                    "error": "object missing",
                    "permanent": True,
                }
            ]
        },
        headers=auth(WORKER),
    )
    assert acked.json()["success"], acked.text
    return job_id


async def status_of(client: httpx.AsyncClient, job_id: int) -> str:
    r = await client.get(f"/jobs/{job_id}", headers=auth(ADMIN))
    return str(r.json()["status"])


async def test_pages_send_a_signed_out_browser_to_the_sign_in_and_streams_answer_401(
    served: Any,
) -> None:
    _, browser = served
    for page in ("/ui/", "/ui/runs", "/ui/jobs", "/ui/jobs/1", "/ui/runs/r1"):
        r = await browser.client.get(page)
        assert r.status_code == 303 and r.headers["location"].endswith("/ui/sign-in"), page
    for stream in ("/ui/events", "/ui/runs/r1/events"):
        assert (await browser.client.get(stream)).status_code == 401
    # A bearer header is the API's way in, not the dashboard's.
    r = await browser.client.get("/ui/", headers=auth(ADMIN))
    assert r.status_code == 303


async def test_signing_in_sets_an_httponly_strict_cookie_for_the_dashboard_only(
    served: Any,
) -> None:
    _, browser = served
    r = await browser.post("/ui/sign-in", {"token": ADMIN})
    assert r.status_code == 303 and r.headers["location"].endswith("/ui/")
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    for attribute in ("HttpOnly", "Path=/ui", "SameSite=strict", "Max-Age=28800"):
        assert attribute in cookie, cookie
    assert ADMIN not in cookie  # the cookie names the token, never holds it
    page = await browser.client.get("/ui/")
    assert page.status_code == 200 and "<h1>Overview</h1>" in page.text
    headers = page.headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY" and headers["cache-control"] == "no-store"


async def test_a_wrong_token_or_a_sign_in_from_another_origin_is_refused(served: Any) -> None:
    _, browser = served
    wrong = await browser.post("/ui/sign-in", {"token": "nobody-has-this-token"})
    assert wrong.status_code == 401 and "not valid" in wrong.text
    assert "nobody-has-this-token" not in wrong.text and "set-cookie" not in wrong.headers
    for origin in ("http://evil.example", None):
        r = await browser.post("/ui/sign-in", {"token": ADMIN}, origin=origin)
        assert r.status_code == 403 and "set-cookie" not in r.headers, origin
    json_body = await browser.client.post(
        "/ui/sign-in", json={"token": ADMIN}, headers={"origin": browser.base}
    )
    assert json_body.status_code == 415


async def test_every_value_shown_is_escaped(served: Any) -> None:
    _, browser = served
    evil = "<script>alert(1)</script>"  # a run id with "/", "?" and "#" in it too
    body = {"runId": evil, "tenantId": "t1", "r2Key": "t1/<img src=x onerror=alert(2)>.txt"}
    enqueued = await browser.client.post("/jobs/enqueue", json=body, headers=auth(ADMIN))
    job_id = enqueued.json()["jobId"]
    await browser.sign_in(ADMIN)
    run_page = "/ui/runs/%3Cscript%3Ealert%281%29%3C/script%3E"
    for page in ("/ui/runs", "/ui/jobs", f"/ui/jobs/{job_id}", run_page):
        r = await browser.client.get(page)
        text = r.text
        assert r.status_code == 200, page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text, page
        assert "<script>alert" not in text and "<img src=x" not in text, page
    assert f'href="{run_page}"' in (await browser.client.get("/ui/runs")).text
    odd = {"runId": "a/b?c#d", "tenantId": "t1", "r2Key": "t1/odd.txt"}
    await browser.client.post("/jobs/enqueue", json=odd, headers=auth(ADMIN))
    assert 'href="/ui/runs/a/b%3Fc%23d"' in (await browser.client.get("/ui/runs")).text
    assert (
        'Run <span class="mono">a/b?c#d</span>'
        in (await browser.client.get("/ui/runs/a/b%3Fc%23d")).text
    )


async def test_requeue_needs_the_csrf_token_the_origin_and_the_admin_role_then_confirms(
    served: Any,
) -> None:
    _, browser = served
    job_id = await failed_job(browser.client)
    csrf = await browser.sign_in(PRODUCER)
    refused = await browser.post("/ui/requeue", {"csrf": csrf, "job": job_id, "confirmed": "yes"})
    assert refused.status_code == 403 and "needs the admin role" in refused.text
    assert "requeue-job" not in (await browser.client.get(f"/ui/jobs/{job_id}")).text
    csrf = await browser.sign_in(ADMIN)
    form = {"csrf": csrf, "job": job_id, "confirmed": "yes"}
    for bad in ({**form, "csrf": "forged"}, {k: v for k, v in form.items() if k != "csrf"}):
        r = await browser.post("/ui/requeue", bad)
        assert r.status_code == 403 and "CSRF" in r.text
    for origin in ("http://evil.example", None):
        r = await browser.post("/ui/requeue", form, origin=origin)
        assert r.status_code == 403 and "Origin" in r.text
    assert await status_of(browser.client, job_id) == "failed"
    confirm = await browser.post("/ui/requeue", {"csrf": csrf, "job": job_id})
    assert confirm.status_code == 200 and f"Return job {job_id} to pending?" in confirm.text
    assert await status_of(browser.client, job_id) == "failed"  # asking changes nothing
    done = await browser.post("/ui/requeue", form)
    assert done.status_code == 200 and f"Requeued 1 failed job of job {job_id}" in done.text
    assert await status_of(browser.client, job_id) == "pending"


async def test_requeue_of_a_run_and_of_selected_jobs_report_what_changed(served: Any) -> None:
    _, browser = served
    a = await failed_job(browser.client, "r1")
    b = await failed_job(browser.client, "r2")
    csrf = await browser.sign_in(ADMIN)
    confirm = await browser.post("/ui/requeue", {"csrf": csrf, "run": "r1"})
    assert "Return the 1 failed jobs of run r1 to pending?" in confirm.text
    done = await browser.post("/ui/requeue", {"csrf": csrf, "run": "r1", "confirmed": "yes"})
    assert "Requeued 1 failed job" in done.text
    assert await status_of(browser.client, a) == "pending"
    both = await browser.client.post(
        "/ui/requeue",
        content=f"csrf={csrf}&job={a}&job={b}&confirmed=yes",
        headers={"origin": browser.base, "content-type": "application/x-www-form-urlencoded"},
    )
    assert "Requeued 1 failed job of the 2 selected jobs" in both.text  # a was pending already
    assert await status_of(browser.client, b) == "pending"


async def pending_job(client: httpx.AsyncClient, run: str = "r1", tenant: str = "t1") -> int:
    body = {"runId": run, "tenantId": tenant, "r2Key": f"{tenant}/{run}/p.txt"}
    enqueued = await client.post("/jobs/enqueue", json=body, headers=auth(ADMIN))
    return int(enqueued.json()["jobId"])


async def test_cancel_of_a_job_needs_the_csrf_token_confirms_and_reports(served: Any) -> None:
    _, browser = served
    job_id = await pending_job(browser.client)
    csrf = await browser.sign_in(PRODUCER)  # the API lets a producer cancel too
    assert "cancel-job" in (await browser.client.get(f"/ui/jobs/{job_id}")).text
    form = {"csrf": csrf, "job": job_id, "confirmed": "yes"}
    for bad in ({**form, "csrf": "forged"}, {k: v for k, v in form.items() if k != "csrf"}):
        r = await browser.post("/ui/cancel", bad)
        assert r.status_code == 403 and "CSRF" in r.text
    confirm = await browser.post("/ui/cancel", {"csrf": csrf, "job": job_id})
    assert confirm.status_code == 200 and f"Cancel job {job_id}?" in confirm.text
    assert await status_of(browser.client, job_id) == "pending"  # asking changes nothing
    done = await browser.post("/ui/cancel", form)
    assert done.status_code == 200 and f"Of job {job_id}: cancelled 1;" in done.text
    assert await status_of(browser.client, job_id) == "cancelled"
    worker_csrf = await browser.sign_in(WORKER)
    r = await browser.post("/ui/cancel", {"csrf": worker_csrf, "job": job_id})
    assert r.status_code == 403


async def test_cancel_of_a_run_and_of_selected_jobs_report_what_changed(served: Any) -> None:
    _, browser = served
    failed = await failed_job(browser.client, "r2")  # first: the pull would take a pending one
    a = await pending_job(browser.client, "r1")
    b = await pending_job(browser.client, "r2")
    csrf = await browser.sign_in(ADMIN)
    assert "cancel-run" in (await browser.client.get("/ui/runs/r1")).text
    confirm = await browser.post("/ui/cancel", {"csrf": csrf, "run": "r1"})
    assert "Cancel the 1 unfinished jobs of run r1?" in confirm.text
    done = await browser.post("/ui/cancel", {"csrf": csrf, "run": "r1", "confirmed": "yes"})
    assert "Of the 1 unfinished jobs of run r1: cancelled 1;" in done.text
    assert await status_of(browser.client, a) == "cancelled"
    assert 'id="cancel-selected"' in (await browser.client.get("/ui/jobs")).text
    both = await browser.client.post(
        "/ui/cancel",
        content=f"csrf={csrf}&job={b}&job={failed}&confirmed=yes",
        headers={"origin": browser.base, "content-type": "application/x-www-form-urlencoded"},
    )
    assert "Of the 2 selected jobs: cancelled 1;" in both.text and "1 not changed" in both.text
    assert await status_of(browser.client, b) == "cancelled"
    assert await status_of(browser.client, failed) == "failed"


async def test_cancel_in_another_tenant_answers_as_a_job_or_run_that_does_not_exist(
    served: Any,
) -> None:
    _, browser = served
    theirs = await pending_job(browser.client, "globex-run", "globex")
    mine = await pending_job(browser.client, "acme-run", "acme")
    csrf = await browser.sign_in(ACME)
    for form in (
        {"job": theirs},
        {"job": theirs, "confirmed": "yes"},
        {"run": "globex-run"},
        {"run": "globex-run", "confirmed": "yes"},
    ):
        r = await browser.post("/ui/cancel", {"csrf": csrf, **form})
        assert r.status_code == 404, form
    selected = await browser.client.post(
        "/ui/cancel",
        content=f"csrf={csrf}&job={theirs}&job={mine}&confirmed=yes",
        headers={"origin": browser.base, "content-type": "application/x-www-form-urlencoded"},
    )
    assert "cancelled 1;" in selected.text and "1 not changed" in selected.text
    assert await status_of(browser.client, theirs) == "pending"
    assert await status_of(browser.client, mine) == "cancelled"


async def test_pause_and_resume_are_for_admins_and_the_overview_shows_what_is_paused(
    served: Any,
) -> None:
    _, browser = served
    csrf = await browser.sign_in(PRODUCER)
    assert "pause-queue" not in (await browser.client.get("/ui/")).text
    r = await browser.post("/ui/pause", {"csrf": csrf, "confirmed": "yes"})
    assert r.status_code == 403 and "needs the admin role" in r.text
    csrf = await browser.sign_in(ADMIN)
    overview = (await browser.client.get("/ui/")).text
    assert "pause-queue" in overview and "Nothing is paused." in overview
    r = await browser.post("/ui/pause", {"csrf": "forged", "confirmed": "yes"})
    assert r.status_code == 403 and "CSRF" in r.text
    confirm = await browser.post("/ui/pause", {"csrf": csrf})
    assert "Pause the whole queue?" in confirm.text
    controls = await browser.client.get("/queue/controls", headers=auth(ADMIN))
    assert controls.json()["paused"] is False  # asking changes nothing
    done = await browser.post("/ui/pause", {"csrf": csrf, "confirmed": "yes"})
    assert "The whole queue is paused." in done.text
    done = await browser.post("/ui/pause", {"csrf": csrf, "tenant": "t9", "confirmed": "yes"})
    assert "Tenant t9 is paused." in done.text
    overview = (await browser.client.get("/ui/")).text
    assert "<li>The whole queue</li>" in overview and "<li>Tenant t9</li>" in overview
    done = await browser.post("/ui/resume", {"csrf": csrf, "confirmed": "yes"})
    assert "The whole queue is running." in done.text
    controls = await browser.client.get("/queue/controls", headers=auth(ADMIN))
    assert controls.json()["paused"] is False
    assert [t["tenantId"] for t in controls.json()["tenants"] if t["paused"]] == ["t9"]


async def test_a_tenants_admin_pauses_and_resumes_only_its_tenant(tmp_path: Path) -> None:
    acme_admin = "acme-admin-token-0123456789"
    config = make_config(tmp_path)
    secrets = msgspec.structs.replace(
        config.secrets, http_tokens=Secret(f"{TOKENS},{acme_admin}:admin:acme")
    )
    async with ActorSystem(msgspec.structs.replace(config, secrets=secrets)) as system:
        base = f"http://127.0.0.1:{system.http.port}"
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            browser = Browser(client, base)
            paused = await client.post(
                "/queue/pause", json={"tenantId": "globex"}, headers=auth(ADMIN)
            )
            assert paused.status_code == 200, paused.text
            csrf = await browser.sign_in(acme_admin)
            overview = (await client.get("/ui/")).text
            assert "pause-queue" not in overview and "Pause tenant acme" in overview
            assert "globex" not in overview and "Nothing is paused." in overview
            for form in ({}, {"tenant": "globex"}):
                r = await browser.post("/ui/pause", {"csrf": csrf, "confirmed": "yes", **form})
                assert r.status_code == 403, form
            done = await browser.post(
                "/ui/pause", {"csrf": csrf, "tenant": "acme", "confirmed": "yes"}
            )
            assert "Tenant acme is paused." in done.text
            overview = (await client.get("/ui/")).text
            assert "<li>Tenant acme</li>" in overview and "globex" not in overview
            done = await browser.post(
                "/ui/resume", {"csrf": csrf, "tenant": "acme", "confirmed": "yes"}
            )
            assert "Tenant acme is running." in done.text
            controls = (await client.get("/queue/controls", headers=auth(ADMIN))).json()
            assert controls["paused"] is False
            assert [t["tenantId"] for t in controls["tenants"] if t["paused"]] == ["globex"]


async def test_purge_confirms_then_reports_how_many_jobs_it_deleted(served: Any) -> None:
    _, browser = served
    job_id = await failed_job(browser.client)
    csrf = await browser.sign_in(ADMIN)
    confirm = await browser.post("/ui/purge", {"csrf": csrf, "older_than": "0"})
    assert "cannot be undone" in confirm.text
    assert await status_of(browser.client, job_id) == "failed"
    done = await browser.post("/ui/purge", {"csrf": csrf, "older_than": "0", "confirmed": "yes"})
    assert "Deleted 1 finished job" in done.text
    assert (await browser.client.get(f"/jobs/{job_id}", headers=auth(ADMIN))).status_code == 404
    bad = await browser.post("/ui/purge", {"csrf": csrf, "older_than": "-5"})
    assert bad.status_code == 400


async def test_a_tenant_scoped_session_sees_and_streams_only_its_tenants_runs_and_jobs(
    served: Any,
) -> None:
    _, browser = served
    theirs = await failed_job(browser.client, "globex-run", "globex")
    mine = await failed_job(browser.client, "acme-run", "acme")
    await browser.sign_in(ACME)
    for page in (
        "/ui/",
        "/ui/runs",
        "/ui/jobs",
        "/ui/jobs?tenant=globex",
        "/ui/runs?tenant=globex",
    ):
        r = await browser.client.get(page)
        assert r.status_code == 200 and "globex" not in r.text, page
    assert "acme-run" in (await browser.client.get("/ui/runs")).text
    assert f'href="/ui/jobs/{mine}"' in (await browser.client.get("/ui/jobs")).text
    for guess in (f"/ui/jobs/{theirs}", "/ui/runs/globex-run", "/ui/runs/globex-run/events"):
        r = await browser.client.get(guess)
        missing = await browser.client.get(
            guess.replace("globex-run", "no-run").replace(str(theirs), "999999")
        )
        assert r.status_code == missing.status_code == 404, guess
    for nonsense in ("/ui/jobs/not-a-number", "/ui/nothing/here"):
        r = await browser.client.get(nonsense)
        assert r.status_code == 404 and "<h1>Not found</h1>" in r.text, nonsense
    # The queue-wide figures (the stats route refuses a scoped token) are not shown either.
    assert "Throughput" in (overview := (await browser.client.get("/ui/")).text)
    assert "needs a token that is not limited to one tenant" in overview


async def test_signing_out_ends_the_session_even_for_a_copy_of_its_cookie(served: Any) -> None:
    _, browser = served
    csrf = await browser.sign_in(ADMIN)
    copy = browser.client.cookies[COOKIE]
    r = await browser.post("/ui/sign-out", {"csrf": csrf})
    assert r.status_code == 303 and r.headers["location"].endswith("/ui/sign-in")
    for cookie in (copy, copy[:-4] + "AAAA"):  # the signed-out one, and a forged one
        async with httpx.AsyncClient(base_url=browser.base, cookies={COOKIE: cookie}) as other:
            assert (await other.get("/ui/")).status_code == 303


def request_with(cookie: str) -> Request:
    return Request({"type": "http", "headers": [(b"cookie", f"{COOKIE}={cookie}".encode())]})


def cookie_of(response: Response) -> str:
    return response.headers["set-cookie"].split(";")[0].split("=", 1)[1]


def sessions(clock: FakeClock, keys: str | None, tokens: Tokens) -> Sessions:
    config = make_config(Path("."))
    secrets = Secrets(session_keys=Secret(keys) if keys else None)
    return Sessions(tokens, clock, type(config)(http=config.http, secrets=secrets))


def test_a_session_ends_when_it_expires_or_when_its_token_is_no_longer_configured() -> None:
    clock = FakeClock()
    tokens = Tokens.parse(f"{ADMIN}:admin")
    store = sessions(clock, None, tokens)
    response = Response()
    (principal,) = [tokens.lookup(ADMIN)]
    assert principal is not None
    store.open(principal, response, "/ui", secure=False)
    cookie = cookie_of(response)
    assert store.read(request_with(cookie)) is not None
    clock.advance(8 * 3600 - 1)
    assert store.read(request_with(cookie)) is not None
    clock.advance(1)
    assert store.read(request_with(cookie)) is None
    revoked = sessions(clock, "k" * 32, tokens)
    fresh = Response()
    revoked.open(principal, fresh, "/ui", secure=True)
    assert "Secure" in fresh.headers["set-cookie"]
    without = sessions(clock, "k" * 32, Tokens.parse(f"{PRODUCER}:producer"))
    assert without.read(request_with(cookie_of(fresh))) is None


def test_session_keys_rotate_the_first_signs_and_every_one_verifies() -> None:
    clock = FakeClock()
    tokens = Tokens.parse(f"{ADMIN}:admin")
    principal = tokens.lookup(ADMIN)
    assert principal is not None
    old, new = "o" * 32, "n" * 32
    response = Response()
    sessions(clock, old, tokens).open(principal, response, "/ui", secure=False)
    cookie = cookie_of(response)
    assert sessions(clock, f"{new},{old}", tokens).read(request_with(cookie)) is not None
    assert sessions(clock, new, tokens).read(request_with(cookie)) is None
    with pytest.raises(ConfigError, match="ACTORS_SESSION_KEYS"):
        sessions(clock, "short", tokens)


def test_a_build_ships_the_dashboards_templates_and_static_files(tmp_path: Path) -> None:
    # As tests/queue/test_postgres_sql.py does for the SQL files: only declared package data.
    build = """
import sys
from setuptools.config.pyprojecttoml import apply_configuration
from setuptools.dist import Distribution

dist = apply_configuration(Distribution({"script_name": "setup.py"}), "pyproject.toml")
dist.include_package_data = False
dist.get_command_obj("egg_info").egg_base = sys.argv[2]
dist.get_command_obj("build_py").build_lib = sys.argv[1]
dist.run_command("build_py")
"""
    subprocess.run(
        [sys.executable, "-c", build, str(tmp_path / "lib"), str(tmp_path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    source = ROOT / "actors" / "http"
    shipped = tmp_path / "lib" / "actors" / "http"
    for folder in ("templates", "static"):
        files = sorted(p.name for p in (source / folder).iterdir() if p.is_file())
        assert files and sorted(p.name for p in (shipped / folder).iterdir()) == files


async def test_the_dashboard_works_where_a_host_app_mounts_the_api(served: Any) -> None:
    system, _ = served
    host = Starlette(routes=[Mount("/ops", app=create_app(system))])
    transport = httpx.ASGITransport(app=host)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        signed = await client.post(
            "/ops/ui/sign-in", data={"token": ADMIN}, headers={"origin": "http://testserver"}
        )
        assert signed.status_code == 303
        assert signed.headers["location"] == "http://testserver/ops/ui/"
        assert "Path=/ops/ui" in signed.headers["set-cookie"]
        page = await client.get("/ops/ui/")
        assert page.status_code == 200
        assert 'href="/ops/ui/runs"' in page.text and "/ops/ui/static/dashboard.css?v=" in page.text
        css = await client.get("/ops/ui/static/dashboard.css")
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
