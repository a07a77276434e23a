"""Schemathesis against the real process: generated requests, from valid to malformed, never
get a 500, and every answer matches /openapi.json (status code, content type, body schema)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from http_helpers import ADMIN, auth, server_config, serving
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from actors.bounds import MAX_PULL_WAIT_SECONDS
from actors.http import openapi_document

pytestmark = pytest.mark.slow

schema = schemathesis.openapi.from_dict(openapi_document())
# A generated body over [http].max_body_bytes is refused with 413 before it is read: a refusal
# of invalid data as good as a 400 (the schema documents 413 for every operation).
_rejections = schema.config.checks.negative_data_rejection.expected_statuses
if _rejections is not None and "413" not in _rejections:
    _rejections.append("413")
EXAMPLES = int(os.environ["HTTP_FUZZ_EXAMPLES"]) if os.environ.get("HTTP_FUZZ_EXAMPLES") else None


@schema.auth()
class AdminToken:
    """Every generated request carries the admin token (the auth checks also try without)."""

    def get(self, case: schemathesis.Case, context: schemathesis.AuthContext) -> str:
        return ADMIN

    def set(self, case: schemathesis.Case, data: str, context: schemathesis.AuthContext) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp_path: Path = tmp_path_factory.mktemp("fuzz")
    with serving(server_config(tmp_path), tmp_path / "server.log") as (url, process):
        # A few jobs and a run, so that ids the fuzzer tries sometimes exist.
        with httpx.Client(base_url=url, headers=auth(ADMIN)) as client:
            jobs = [{"runId": "r1", "tenantId": "t1", "r2Key": f"t1/r1/{i}"} for i in range(5)]
            client.post("/jobs/enqueue-many", json={"jobs": jobs}).raise_for_status()
        yield url
        assert process.poll() is None, "the server died under the fuzzer"
        log = (tmp_path / "server.log").read_text()
        assert "http.unhandled" not in log, log


def test_the_served_document_is_the_one_fuzzed(server: str) -> None:
    assert httpx.get(f"{server}/openapi.json").json() == openapi_document()


# The event stream of a run that never ends (the fuzzer's jobs wait for workers that are not
# there) stays open until the client's timeout: 10 s per example. test_http_process.py and
# test_http_api.py read streams of runs that do end.
@schema.exclude(path="/runs/{run_id}/events").parametrize()
# The suite runs 25 fixed examples per operation; HTTP_FUZZ_EXAMPLES=500 runs a random deep search.
@settings(
    max_examples=EXAMPLES or 25,
    derandomize=EXAMPLES is None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_request_gets_a_500_and_every_answer_matches_the_schema(
    case: schemathesis.Case, server: str
) -> None:
    # A dump's validity is beyond a schema (any string is one): a random body is a dump that
    # cannot be read, a 400, which the positive-data check would take for a refused valid one.
    # So are a cron expression's and a time zone's: a schema-valid one may be refused, with a
    # 400 naming the field (every other check holds).
    dump = case.operation.path.startswith("/api/migrate/")
    schedule = case.path == "/schedules" and case.method == "POST"
    excluded = [positive_data_acceptance] if dump or schedule else []
    # A pull may wait for a job (waitSeconds) that never comes: the server answers when its
    # wait is up, at most MAX_PULL_WAIT_SECONDS.
    waits = case.path == "/jobs/pull"
    case.call_and_validate(
        base_url=server,
        timeout=10 + (MAX_PULL_WAIT_SECONDS if waits else 0),
        excluded_checks=excluded,
    )
