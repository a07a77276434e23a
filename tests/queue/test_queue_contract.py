"""The queue contract (`actors.queue.base.Queue`) holds at run time on every backend.

mypy checks each backend class against the Protocol; these tests check the same at run time:
every verb of the contract exists on each backend with the contract's parameters (names,
kinds, annotations, defaults), and an open queue of each backend is an instance of it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest

from actors.queue import OwnedQueue, Queue, SQLiteQueue
from actors.queue.http import HttpQueue
from actors.queue.postgres._queue import PostgresQueue


def verbs(protocol: type) -> dict[str, Callable[..., Any]]:
    """The verbs ``protocol`` declares, its bases' included (no verb starts with ``_``; what
    typing.Protocol adds does)."""
    found: dict[str, Callable[..., Any]] = {}
    for cls in reversed(protocol.__mro__):
        if cls is object or not getattr(cls, "_is_protocol", False):
            continue
        for name, value in vars(cls).items():
            if not name.startswith("_") and callable(value):
                found[name] = value
    return found


def test_the_contract_names_every_shared_verb() -> None:
    assert set(verbs(Queue)) == {
        "aclose",
        "enqueue",
        "enqueue_many",
        "on_enqueue",
        "pull",
        "start_many",
        "renew",
        "renew_many",
        "release",
        "release_many",
        "ack",
        "ack_many",
        "ack_ids",
        "reap",
        "requeue",
        "purge",
        "get",
        "stats",
        "run_summary",
        "list",
    }
    assert set(verbs(OwnedQueue)) - set(verbs(Queue)) == {"claim_maintenance", "list_runs"}


# HttpQueue's ack_ids may leave out ``owner``: the server knows the owner from the token.
_LOOSER_DEFAULTS = {(HttpQueue, "ack_ids", "owner")}


@pytest.mark.parametrize(
    ("backend", "protocol"),
    [(SQLiteQueue, OwnedQueue), (PostgresQueue, OwnedQueue), (HttpQueue, Queue)],
    ids=["sqlite", "postgres", "http"],
)
def test_every_backend_has_every_verb_with_the_contracts_parameters(
    backend: type, protocol: type
) -> None:
    for name, declared in verbs(protocol).items():
        implemented = getattr(backend, name, None)
        assert implemented is not None, f"{backend.__name__} has no {name}"
        assert inspect.iscoroutinefunction(implemented) == inspect.iscoroutinefunction(declared), (
            f"{backend.__name__}.{name} and the contract disagree on being async"
        )
        want = inspect.signature(declared)
        got = inspect.signature(implemented)
        assert list(got.parameters) == list(want.parameters), f"{backend.__name__}.{name}"
        for param in want.parameters.values():
            have = got.parameters[param.name]
            where = f"{backend.__name__}.{name}({param.name})"
            assert have.kind == param.kind, where
            assert have.annotation == param.annotation, where
            if (backend, name, param.name) not in _LOOSER_DEFAULTS:
                assert have.default == param.default, where
        assert got.return_annotation == want.return_annotation, f"{backend.__name__}.{name}"


@pytest.mark.anyio
async def test_an_open_queue_of_each_backend_is_the_contract(queue: Any, backend: str) -> None:
    assert isinstance(queue, Queue)
    assert isinstance(queue, OwnedQueue)  # opened here, on its own storage


@pytest.mark.anyio
async def test_an_http_queue_is_the_contract_but_owns_no_storage() -> None:
    async with HttpQueue.open("http://127.0.0.1:9", None) as queue:
        assert isinstance(queue, Queue)
        assert not isinstance(queue, OwnedQueue)
