"""A client of the Cloudflare D1 jobs worker, written to its requests alone (standard library).

It knows nothing of this server: the requests are the D1 worker's own (``/uploads/create``,
the PUT to the returned URL, ``/jobs/enqueue``, ``/jobs/pull``, ``/jobs/ack`` with the ids as
strings, as the Python agent sends them, ``/jobs/stats``), with the bearer secret the agent calls
``EDGE_API_TOKEN``. Each command prints one JSON line and exits 1 on a surprise.

    python d1_client.py BASE_URL upload FILE TENANT [TURNSTILE_TOKEN]
    python d1_client.py BASE_URL stats
    python d1_client.py BASE_URL agent TENANT N
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any


def call(base: str, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise SystemExit(f"{method} {path}: {exc.code} {exc.read().decode()}") from None


def upload(base: str, path: str, tenant: str, turnstile: str | None) -> dict[str, Any]:
    """The browser app's upload: create it (Turnstile instead of a token), PUT the file."""
    body = {"contentType": "text/plain", "filename": os.path.basename(path), "tenantId": tenant}
    if turnstile:
        body["cf-turnstile-response"] = turnstile
        created = call(base, "POST", "/uploads/create", body)
    else:
        created = call(base, "POST", "/uploads/create", body, os.environ["EDGE_API_TOKEN"])
    with open(path, "rb") as file:
        data = file.read()
    put = urllib.request.Request(
        created["uploadUrl"], data=data, headers={"Content-Type": "text/plain"}, method="PUT"
    )
    with urllib.request.urlopen(put, timeout=30) as response:
        status = response.status
    assert 200 <= status < 300, status
    return {"runId": created["runId"], "r2Key": created["r2Key"], "put": status}


def agent(base: str, tenant: str, n: int) -> dict[str, Any]:
    """The Python agent's loop: enqueue, pull a batch, ack by ids (strings), read the stats."""
    token = os.environ["EDGE_API_TOKEN"]
    enqueued = []
    for i in range(n):
        job = {"runId": "agent-run", "tenantId": tenant, "r2Key": f"{tenant}/agent-run/{i}.txt"}
        answer = call(base, "POST", "/jobs/enqueue", job, token)
        assert answer["success"] is True and answer["status"] == "pending", answer
        assert answer["runId"] == "agent-run", answer
        enqueued.append(answer["jobId"])
    pulled = call(base, "POST", "/jobs/pull", {"max": n, "visibilitySeconds": 60}, token)["jobs"]
    assert sorted(job["id"] for job in pulled) == sorted(enqueued), pulled
    for job in pulled:
        for field in ("id", "runId", "tenantId", "r2Key", "attempts", "leaseToken"):
            assert field in job, (field, job)
    done_ids = [str(job["id"]) for job in pulled[:-1]]
    acked = call(base, "POST", "/jobs/ack", {"ids": done_ids, "status": "done"}, token)
    assert acked["success"] is True, acked
    assert [r["id"] for r in acked["results"]] == done_ids, acked  # strings, as sent
    failed = call(
        base, "POST", "/jobs/ack", {"ids": [str(pulled[-1]["id"])], "status": "failed"}, token
    )
    assert failed["success"] is True, failed
    return {"enqueued": enqueued, "done": done_ids, "failed": str(pulled[-1]["id"])}


def main() -> None:
    base, command, *args = sys.argv[1:]
    if command == "upload":
        out = upload(base, args[0], args[1], args[2] if len(args) > 2 else None)
    elif command == "stats":
        out = call(base, "GET", "/jobs/stats", token=os.environ["EDGE_API_TOKEN"])
    elif command == "agent":
        out = agent(base, args[0], int(args[1]))
    else:
        raise SystemExit(f"unknown command {command}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
