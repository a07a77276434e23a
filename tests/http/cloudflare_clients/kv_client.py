"""A worker of the Cloudflare KV task queue, written to its handlers' requests alone (stdlib).

It knows nothing of this server: ``X-API-Key`` with ``QUEUE_API_KEY``; ``GET /api/queue``;
``POST /api/queue/claim {workerId, leaseDurationSec}``; ``/status``, ``/renew``, ``/release``;
``POST /api/result/{taskId} {success, output}``; ``GET /api/result/{taskId}``. It works until a
claim finds nothing, gives back the first task it claims once (as a worker that shuts down
would), and prints one JSON line: the tasks it completed and the one it released.

    python kv_client.py BASE_URL WORKER_ID
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any


def call(base: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json", "X-API-Key": os.environ["QUEUE_API_KEY"]}
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def ok(answer: tuple[int, Any]) -> Any:
    status, body = answer
    if status != 200:
        raise SystemExit(f"{status}: {body}")
    return body


def main() -> None:
    base, worker = sys.argv[1:3]
    listed = ok(call(base, "GET", "/api/queue"))
    assert listed["count"] == len(listed["pending"]), listed
    completed: list[str] = []
    released: str | None = None
    while True:
        claim = {"workerId": worker, "leaseDurationSec": 120}
        claimed = ok(call(base, "POST", "/api/queue/claim", claim))
        if not claimed["success"]:
            assert claimed["message"] == "No tasks available or all tasks are leased", claimed
            break
        task_id, task, lease = claimed["taskId"], claimed["task"], claimed["lease"]
        assert task["id"] == task_id and lease["workerId"] == worker, claimed
        assert lease["expiresAt"] > lease["claimedAt"], lease
        note = ok(call(base, "POST", f"/api/queue/{task_id}/status", {"status": "processing"}))
        assert note == {"success": True, "status": "processing"}, note
        renewed = ok(
            call(
                base, "POST", f"/api/queue/{task_id}/renew", {"workerId": worker, "extendSec": 300}
            )
        )
        assert renewed["success"] is True and renewed["lease"]["renewedAt"], renewed
        if released is None:
            body = {"workerId": worker, "reason": "shutting down"}
            assert ok(call(base, "POST", f"/api/queue/{task_id}/release", body)) == {
                "success": True
            }
            released = task_id
            continue
        # Another worker's id cannot complete this lease.
        status, refused = call(
            base, "POST", f"/api/result/{task_id}", {"success": True, "workerId": worker + "-x"}
        )
        assert (status, refused["error"]) == (403, "Not lease holder"), (status, refused)
        result = {"success": True, "output": {"words": len(str(task.get("content", "")).split())}}
        assert ok(call(base, "POST", f"/api/result/{task_id}", result)) == {"success": True}
        assert ok(call(base, "GET", f"/api/result/{task_id}")) == result
        completed.append(task_id)
    status, missing = call(base, "GET", "/api/queue/999999999")
    assert (status, missing["error"]) == (404, "Task not found"), (status, missing)
    print(json.dumps({"worker": worker, "completed": completed, "released": released}))


if __name__ == "__main__":
    main()
