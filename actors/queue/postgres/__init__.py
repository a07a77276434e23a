"""The PostgreSQL backend (asyncpg), for queues shared by several machines."""

from actors.queue.postgres._queue import PostgresQueue

__all__ = ["PostgresQueue"]
