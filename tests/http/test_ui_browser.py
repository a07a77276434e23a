"""The dashboard in a real headless Chromium (Debian's chromium and chromium-driver) over a real
``python -m actors run``: sign-in, live progress, errors, requeue, tenants, CSRF, screenshots.

One server and one browser serve the whole module; the tests run in file order and build on
each other's data where said. A message on the browser's console of level SEVERE fails the test
that caused it (`console`), unless the test opened a page that answers 401, 403 or 404 on
purpose, and then only that page's status line is allowed.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from http_helpers import ACME, ADMIN, PRODUCER, server_config, serving

from actors.documents.samples import SAMPLES

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
DESKTOP = (1280, 900)
PHONE = (390, 844)
WAIT = 30.0

# Real processes and a browser: seconds per test, outside the development loop (CI runs them).
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip(
            "no Chromium here: install Debian's chromium and chromium-driver "
            "(apt-get install -y chromium chromium-driver; .ci/run does)"
        )
    # Selenium Manager must never fetch a browser or a driver: both are given by path.
    os.environ["SE_OFFLINE"] = "true"
    options = Options()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        f"--window-size={DESKTOP[0]},{DESKTOP[1]}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    except WebDriverException as exc:
        pytest.skip(f"Chromium did not start here: {exc.msg}")
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


class Site:
    """The running server: its URL, its store, and API calls made the way clients make them."""

    def __init__(self, url: str, root: Path) -> None:
        self.url = url
        self.root = root
        self.api = httpx.Client(base_url=url, timeout=10)

    def put_object(self, key: str, data: bytes) -> None:
        """Put an object into the local store, as a producer's upload would."""
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def enqueue(self, token: str, jobs: list[dict[str, Any]]) -> list[int]:
        r = self.api.post(
            "/jobs/enqueue-many",
            json={"jobs": jobs},
            headers={"authorization": f"Bearer {token}"},
        )
        assert r.status_code == 200, r.text
        return [int(job["id"]) for job in r.json()["jobs"]]

    def run_state(self, run_id: str) -> dict[str, Any]:
        r = self.api.get(f"/runs/{run_id}", headers={"authorization": f"Bearer {ADMIN}"})
        assert r.status_code == 200, r.text
        state: dict[str, Any] = r.json()
        return state

    def submit_samples(self, tenant: str, run_id: str, delay: float = 0) -> list[int]:
        jobs = []
        for name, data in SAMPLES.items():
            key = f"{tenant}/{run_id}/{name}"
            self.put_object(key, data)
            jobs.append({"runId": run_id, "tenantId": tenant, "r2Key": key, "delaySeconds": delay})
        return self.enqueue(ADMIN, jobs)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("ui")
    config = server_config(tmp, queue_only=False)
    with serving(config, tmp / "server.log") as (url, _):
        yield Site(url, tmp / "objects")


@pytest.fixture
def console(browser: WebDriver) -> Iterator[Callable[[str], None]]:
    """Fails the test on a SEVERE browser console message; ``allow(url)`` excuses the status
    line of a page the test opened expecting 401, 403 or 404 (call it right after opening it)."""
    allowed: list[str] = []
    browser.get_log("browser")  # drop what earlier tests left

    def allow(url: str) -> None:
        allowed.append(url)

    yield allow
    severe = [
        e["message"]
        for e in browser.get_log("browser")
        if e["level"] == "SEVERE"
        and not any(
            url in e["message"] and re.search(r"status of 40[134]\b", e["message"])
            for url in allowed
        )
    ]
    assert severe == [], f"JavaScript console errors: {severe}"


def wait_for(browser: WebDriver, condition: Callable[[WebDriver], Any], what: str) -> Any:
    return WebDriverWait(browser, WAIT, poll_frequency=0.1).until(condition, message=what)


def sign_in(browser: WebDriver, site: Site, token: str) -> None:
    browser.delete_all_cookies()
    browser.get(site.url + "/ui/")
    wait_for(browser, lambda d: "/ui/sign-in" in d.current_url, "the sign-in page")
    field = browser.find_element(By.ID, "token")
    field.send_keys(token)
    field.submit()
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "h1"), "a page after sign-in")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Overview"


def live(browser: WebDriver, script: str) -> Any:
    """A value read in one script: a live region's elements are replaced on every update, so
    an element found first and read later may be gone."""
    return browser.execute_script(f"return {script}")


def text(browser: WebDriver) -> str:
    return browser.find_element(By.TAG_NAME, "body").text


# --- the tests, in order ------------------------------------------------------------------------


def test_signing_in_with_a_token_opens_the_overview_and_a_wrong_token_does_not(
    browser: WebDriver, site: Site, console: Callable[[str], None]
) -> None:
    browser.delete_all_cookies()
    browser.get(site.url + "/ui/sign-in")
    field = browser.find_element(By.ID, "token")
    field.send_keys("not-a-token-at-all")
    field.submit()
    console(site.url + "/ui/sign-in")  # the refusal answers 401; not a script error
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "[role=alert]"), "the refusal")
    assert "not valid" in browser.find_element(By.CSS_SELECTOR, "[role=alert]").text
    sign_in(browser, site, ADMIN)
    assert "admin" in browser.find_element(By.CSS_SELECTOR, ".badge.role").text
    cookie = browser.get_cookie("actors_session")
    assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert browser.execute_script("return document.cookie") == ""  # invisible to scripts


def test_the_overview_counts_a_new_outcome_without_a_reload(
    browser: WebDriver, site: Site, console: Callable[[str], None]
) -> None:
    browser.get(site.url + "/ui/")
    count = "document.querySelector('[data-count=failed]').textContent"
    before = int(live(browser, count))
    browser.execute_script("window.notReloaded = true")
    site.enqueue(ADMIN, [{"runId": "overview-run", "tenantId": "acme", "r2Key": "acme/none"}])
    wait_for(browser, lambda d: int(live(d, count)) == before + 1, "the failed count to grow")
    assert live(browser, "window.notReloaded") is True


def test_a_run_submitted_through_the_api_reaches_done_on_its_page_without_a_reload(
    browser: WebDriver, site: Site, console: Callable[[str], None]
) -> None:
    # Delayed, so that the page is open before the first job is leased.
    ids = site.submit_samples("acme", "live-run", delay=2)
    browser.get(site.url + "/ui/runs/live-run")
    assert live(browser, "document.getElementById('run-finished').textContent") == (
        f"0 of {len(ids)}"
    )
    browser.execute_script("window.notReloaded = true")
    wait_for(
        browser,
        lambda d: live(d, "document.getElementById('run-status').textContent.trim()") == "done",
        "the run's page to show it done",
    )
    value, top, finished, events = live(
        browser,
        "[document.getElementById('run-progress').value, "
        "document.getElementById('run-progress').max, "
        "document.getElementById('run-finished').textContent, "
        "document.querySelector('.events').textContent]",
    )
    assert value == top == len(ids)
    assert finished == f"{len(ids)} of {len(ids)}"
    assert "done" in events
    assert live(browser, "window.notReloaded") is True


def test_a_failed_jobs_error_shows_on_its_page_and_requeueing_it_gets_it_done(
    browser: WebDriver, site: Site, console: Callable[[str], None]
) -> None:
    key = "acme/fix-run/late-upload.txt"
    (job_id,) = site.enqueue(ADMIN, [{"runId": "fix-run", "tenantId": "acme", "r2Key": key}])
    deadline = time.monotonic() + WAIT
    while site.run_state("fix-run")["failed"] != 1:
        assert time.monotonic() < deadline, "the job never failed"
        time.sleep(0.1)
    browser.get(site.url + "/ui/jobs?status=failed")
    browser.find_element(By.LINK_TEXT, str(job_id)).click()
    wait_for(browser, lambda d: d.find_elements(By.ID, "job-error"), "the job's error")
    assert "does not exist" in browser.find_element(By.ID, "job-error").text
    assert browser.find_element(By.ID, "job-status").text == "failed"
    site.put_object(key, b"The late upload arrived. It has two sentences.\n")
    browser.find_element(By.ID, "requeue-job").click()
    wait_for(browser, lambda d: d.find_elements(By.ID, "confirm"), "the confirmation")
    assert f"job {job_id}" in text(browser)
    browser.find_element(By.ID, "confirm").click()
    wait_for(browser, lambda d: d.find_elements(By.ID, "report"), "the report")
    assert browser.find_element(By.ID, "report").text.startswith("Requeued 1 failed job")
    browser.find_element(By.ID, "back").click()
    deadline = time.monotonic() + WAIT
    while browser.find_element(By.ID, "job-status").text != "done":
        assert time.monotonic() < deadline, "the requeued job never got done"
        time.sleep(0.2)
        browser.refresh()
    assert browser.find_element(By.ID, "error-title").text == "Error of an earlier attempt"


def test_an_action_without_the_csrf_token_is_refused_and_changes_nothing(
    browser: WebDriver, site: Site, console: Callable[[str], None]
) -> None:
    key = "acme/csrf-run/missing.txt"
    (job_id,) = site.enqueue(ADMIN, [{"runId": "csrf-run", "tenantId": "acme", "r2Key": key}])
    deadline = time.monotonic() + WAIT
    while site.run_state("csrf-run")["failed"] != 1:
        assert time.monotonic() < deadline, "the job never failed"
        time.sleep(0.1)
    url = f"{site.url}/ui/jobs/{job_id}"
    browser.get(url)
    browser.execute_script("document.querySelector('#requeue-job').form.csrf.remove()")
    browser.find_element(By.ID, "requeue-job").click()
    console(site.url + "/ui/requeue")
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "[role=alert]"), "a refusal")
    assert "CSRF" in browser.find_element(By.CSS_SELECTOR, "[role=alert]").text
    assert browser.find_element(By.TAG_NAME, "h1").text == "Not allowed"
    browser.get(url)
    browser.execute_script("document.querySelector('#requeue-job').form.csrf.value = 'forged'")
    browser.find_element(By.ID, "requeue-job").click()
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "[role=alert]"), "a refusal")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Not allowed"
    assert site.run_state("csrf-run")["failed"] == 1  # nothing was requeued


def test_a_tenant_scoped_sign_in_sees_none_of_another_tenants_runs_or_jobs(
    browser: WebDriver, site: Site, console: Callable[[str], None]
) -> None:
    other = site.enqueue(
        PRODUCER,
        [{"runId": "secret-run-of-another", "tenantId": "globex", "r2Key": "globex/x.txt"}],
    )[0]
    sign_in(browser, site, ACME)  # a producer limited to tenant acme
    assert "acme" in browser.find_element(By.CSS_SELECTOR, ".badge.role").text
    for page in (
        "/ui/",
        "/ui/runs",
        "/ui/jobs",
        "/ui/jobs?tenant=globex",
        "/ui/runs?tenant=globex",
    ):
        browser.get(site.url + page)
        body = text(browser)
        assert "globex" not in body, page
        assert "globex" not in browser.page_source, page
    browser.get(site.url + "/ui/runs")
    assert "live-run" in text(browser)  # its own runs are there
    for guess in (f"/ui/jobs/{other}", "/ui/runs/secret-run-of-another", "/ui/runs/no-such-run"):
        browser.get(site.url + guess)
        console(site.url + guess)
        assert browser.find_element(By.TAG_NAME, "h1").text == "Not found", guess
        assert "globex" not in browser.page_source.replace(guess, ""), guess
    stream = browser.execute_script(
        "return fetch(arguments[0]).then(r => r.status)", "/ui/runs/secret-run-of-another/events"
    )
    console(site.url + "/ui/runs/secret-run-of-another/events")
    assert stream == 404
    # No action of an admin is offered to a producer, and posting one is refused.
    browser.get(f"{site.url}/ui/runs/live-run")
    assert not browser.find_elements(By.ID, "requeue-run")


def test_screenshots_of_the_overview_a_run_and_a_job_at_desktop_and_phone_widths(
    browser: WebDriver, site: Site, console: Callable[[str], None], tmp_path: Path
) -> None:
    """Pictures for the README (docs/screenshots/) from the samples' real results.

    They are written to a temporary directory, and over docs/screenshots/ when
    ACTORS_SCREENSHOTS=update (the command in docs/screenshots/README.md).
    """
    for run in ("samples-a", "samples-b"):
        site.submit_samples("acme", run)
    # Two that fail: a PDF cut short, and a file never uploaded.
    site.put_object("acme/samples-b/scan-0412.pdf", SAMPLES["harbour-report.pdf"][:600])
    site.enqueue(
        ADMIN,
        [
            {"runId": "samples-b", "tenantId": "acme", "r2Key": f"acme/samples-b/{name}"}
            for name in ("scan-0412.pdf", "minutes-draft.txt")
        ],
    )
    deadline = time.monotonic() + WAIT
    while site.run_state("samples-b")["status"] not in ("done", "failed"):
        assert time.monotonic() < deadline, "the samples never finished"
        time.sleep(0.1)
    sign_in(browser, site, ADMIN)
    browser.get(site.url + "/ui/jobs?run=samples-b&key=harbour")
    job_url = browser.find_element(By.CSS_SELECTOR, "#jobs tbody a").get_attribute("href")
    pages = {
        "overview": site.url + "/ui/",
        "run": site.url + "/ui/runs/samples-b",
        "job": job_url,
    }
    out = DOCS if os.environ.get("ACTORS_SCREENSHOTS") == "update" else tmp_path
    out.mkdir(parents=True, exist_ok=True)
    try:
        for width_name, (width, height) in (("desktop", DESKTOP), ("phone", PHONE)):
            browser.set_window_size(width, height)
            for name, url in pages.items():
                browser.get(url)
                full = browser.execute_script("return document.documentElement.scrollHeight")
                browser.set_window_size(width, min(int(full), 2 * height))
                path = out / f"{name}-{width_name}.png"
                assert browser.save_screenshot(str(path))
                data = path.read_bytes()
                assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
                browser.set_window_size(width, height)
    finally:
        browser.set_window_size(*DESKTOP)
