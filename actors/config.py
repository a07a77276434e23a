"""The configuration: one msgspec Struct per TOML table, and ``load_config``, its one reader."""

from __future__ import annotations

import importlib
import os
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from actors.bounds import (
    DAY,
    HOUR,
    MINUTE,
    AckBatch,
    Attempts,
    Count,
    Delay,
    IdText,
    Interval,
    JobTimeout,
    MaintenanceInterval,
    PathText,
    PerMinute,
    Port,
    Priority,
    PullSize,
    PullWait,
    Retention,
    ScheduleCron,
    ScheduleGrace,
    ScheduleInterval,
    ScheduleName,
    TenantLeased,
    TenantRate,
    Timeout,
    TimeZoneName,
    UploadUrlSeconds,
    Visibility,
    Weight,
)
from actors.cron import Cadence
from actors.errors import ConfigError, InvalidArgument

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "ENV_OVERRIDES",
    "TURNSTILE_VERIFY_URL",
    "Config",
    "HttpConfig",
    "LogConfig",
    "PipelineConfig",
    "ProcessorConfig",
    "QueueConfig",
    "RuntimeConfig",
    "ScheduleConfig",
    "Secret",
    "Secrets",
    "StorageConfig",
    "SupervisionConfig",
    "TenantConfig",
    "config_path_from",
    "dump_config",
    "load_config",
    "require_package",
]

#: Cloudflare's Turnstile siteverify endpoint, the default of [http].turnstile_verify_url.
TURNSTILE_VERIFY_URL = "https://challenges.cloudflare.com/turnstile/v0/siteverify"

# A tenant named in the config: one key segment (no '/'), or "*" in turnstile_tenants.
TenantName = Annotated[str, Meta(min_length=1, max_length=1024, pattern=r"^[^/]+$")]
UrlText = Annotated[str, Meta(min_length=1, max_length=4096, pattern=r"^https?://\S+$")]

#: Where ``load_config`` looks when neither ``--config`` nor ``ACTORS_CONFIG`` names a file.
DEFAULT_CONFIG_PATH = Path("config/actors.toml")

# Every number and path has bounds (`actors.bounds`), so that no accepted value breaks the
# system; a value outside is a ConfigError that names the key and the bound.


class _Table(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """Base of every table: a key the code does not know is an error (usually a typo)."""


class RuntimeConfig(_Table, frozen=True):
    backend: Literal["asyncio", "trio"] = "asyncio"


class TenantConfig(_Table, frozen=True):
    """``[queue.tenants.<name>]``: a tenant's share of fair claims and its limits (none when left
    out), written into the queue's controls when a pipeline or server opens it."""

    weight: Weight = 1
    max_leased: TenantLeased | None = None
    max_per_second: TenantRate | None = None


class QueueConfig(_Table, frozen=True):
    backend: Literal["sqlite", "postgres", "http"] = "sqlite"
    path: PathText = "data/actors.db"
    # normal: survives a process crash; full: also survives power loss (fsync on every commit).
    durability: Literal["normal", "full"] = "normal"
    visibility_seconds: Visibility = 60.0
    batch_size: PullSize = 32
    max_attempts: Attempts = 5
    # A failed attempt waits retry_base_seconds * 2**(attempt-1), at most retry_cap_seconds,
    # less up to half of it at random (so jobs that failed together do not retry together).
    retry_base_seconds: Delay = 1.0
    retry_cap_seconds: Delay = 300.0
    poll_interval_seconds: Interval = 1.0
    # backend = "http": an idle worker's pull waits at the server this long for a job (a long
    # poll, answered as soon as one is enqueued); 0 polls every poll_interval_seconds instead.
    pull_wait_seconds: PullWait = 20.0
    reap_interval_seconds: Interval = 5.0
    # Finished jobs older than this are purged on a schedule; 0 keeps them forever.
    retention_seconds: Retention = 7 * 24 * 3600.0
    # How often that purge runs (by one of the processes sharing the queue); at most a year.
    purge_interval_seconds: MaintenanceInterval = 3600.0
    dsn: str | None = None  # backend = "postgres"; the password comes from PGPASSWORD
    url: str | None = None  # backend = "http"; the token comes from EDGE_API_TOKEN
    # Pulls serve tenants in turns (each tenant's own jobs by priority); false: the highest
    # priority first across tenants.
    fair: bool = True
    tenants: dict[IdText, TenantConfig] = msgspec.field(default_factory=dict)


class PipelineConfig(_Table, frozen=True):
    # Jobs leased and not yet acked. Memory does not grow with it: only a few whole objects
    # wait between fetchers and processors; the rest wait as ids.
    concurrency: Annotated[int, Meta(ge=1, le=10_000)] = 128
    fetchers: Annotated[int, Meta(ge=1, le=256)] = 4
    processors: Annotated[int, Meta(ge=1, le=256)] = 4
    shutdown_grace_seconds: Annotated[float, Meta(ge=0, le=HOUR)] = 30.0
    ack_batch_size: AckBatch = 100
    # How long the ack reporter waits to fill a batch; a few ms buys group commit.
    ack_window_seconds: Annotated[float, Meta(ge=0, le=MINUTE)] = 0.002
    # Objects are read whole into memory: at most 1 GiB each.
    max_object_bytes: Annotated[int, Meta(ge=1, le=1024**3)] = 50 * 1024 * 1024
    # A run room with no event for this long goes to sleep (its state is in the database).
    run_idle_seconds: Annotated[float, Meta(ge=0.001, le=DAY)] = 60.0
    # A job's processing time limit (a job's own timeout_seconds overrides it): past it the job
    # fails with `timeout` (retried with backoff up to max_attempts), its worker process is
    # killed, and its lease is no longer renewed. Bounded like the per-job value.
    job_timeout_seconds: JobTimeout = 600.0


class StorageConfig(_Table, frozen=True):
    kind: Literal["local", "r2", "s3"] = "local"
    root: PathText = "data/objects"  # kind = "local"
    endpoint: str | None = None  # kind = "r2" | "s3"; or R2_ENDPOINT
    bucket: str | None = None  # or R2_BUCKET
    region: str = "auto"
    addressing_style: Literal["auto", "virtual", "path"] = "auto"
    # Bounds each request to the store, a download's body included.
    timeout_seconds: Timeout = 30.0
    # Transient failures (timeouts, resets, 5xx, throttling) are retried this many times within
    # one attempt of the job, waiting base * 2**n (at most the cap, less up to half at random).
    max_retries: Annotated[int, Meta(ge=0, le=20)] = 3
    retry_base_seconds: Delay = 0.2
    retry_cap_seconds: Delay = 5.0
    # Uploads larger than the threshold go up in parts (S3's minimum part is 5 MiB, its
    # largest single upload 5 GiB).
    multipart_threshold_bytes: Annotated[int, Meta(ge=5 * 1024 * 1024, le=5 * 1024**3)] = (
        16 * 1024 * 1024
    )
    multipart_part_bytes: Annotated[int, Meta(ge=5 * 1024 * 1024, le=5 * 1024**3)] = 8 * 1024 * 1024


class ProcessorConfig(_Table, frozen=True):
    kind: Literal["local", "gemini", "python"] = "local"
    # kind = "python": "package.module:callable", called with this table, returns a Processor.
    factory: str | None = None
    # kind = "python": build and run the processor in the worker processes (one event loop per
    # job there), so a job that blocks its loop or runs away is killed at its time limit.
    isolate: bool = False
    # Address space (RLIMIT_AS) of each worker process, in MiB; 0: no limit. A job that needs
    # more fails with an out-of-memory error instead of exhausting the host.
    worker_memory_mib: Annotated[int, Meta(ge=0, le=1024 * 1024)] = 2048
    max_chunk_chars: Annotated[int, Meta(ge=100, le=100_000)] = 2000
    summary_sentences: Annotated[int, Meta(ge=1, le=50)] = 3
    chat_model: str = "gemini-2.0-flash"  # or GEMINI_CHAT_MODEL
    embed_model: str = "text-embedding-004"  # or GEMINI_EMBED_MODEL
    base_url: str | None = None  # or AI_GATEWAY_URL; None means Google's endpoint
    # kind = "gemini": the instruction sent with each document's text; the answer must fit
    # the response schema (summary, topics, entities, language; see actors/processors/_gemini.py).
    prompt: str = (
        "Analyse the document below. Give a short summary, its main topics, the named "
        "entities it mentions and its language."
    )
    # JSON text of a Gemini responseSchema replacing the default one (a different analysis).
    response_schema: str | None = None
    # outputDimensionality of the embeddings (None: the model's own, 768 for text-embedding-004).
    embed_dimensions: Annotated[int, Meta(ge=1, le=4096)] | None = None
    api_version: str = "v1beta"
    # Send PDFs to the chat model as inline data instead of the locally extracted text.
    send_pdf_inline: bool = False
    # Characters of text sent to the chat model at most (the rest is embedded, not analysed).
    max_prompt_chars: Annotated[int, Meta(ge=1000, le=10_000_000)] = 200_000
    embed_batch_size: Annotated[int, Meta(ge=1, le=100)] = 100
    # Embeddings stored per document at most: the result must fit the queue's 256 KiB.
    max_chunks: Annotated[int, Meta(ge=1, le=100)] = 64
    # Shared by every processor of the process: calls in flight, and per-minute budgets.
    concurrency: Annotated[int, Meta(ge=1, le=1000)] = 8
    requests_per_minute: PerMinute = 1000
    tokens_per_minute: PerMinute = 1_000_000
    # Per call: 429, 5xx and timeouts are retried this often within one attempt of the job.
    max_retries: Annotated[int, Meta(ge=0, le=20)] = 4
    retry_base_seconds: Delay = 1.0
    retry_cap_seconds: Delay = 60.0
    timeout_seconds: Timeout = 120.0


class SupervisionConfig(_Table, frozen=True):
    max_restarts: Count = 5
    max_seconds: Annotated[float, Meta(ge=0.001, le=DAY)] = 30.0
    backoff_min_seconds: Delay = 0.1
    backoff_max_seconds: Delay = 10.0


class HttpConfig(_Table, frozen=True):
    enabled: bool = False
    host: str = "127.0.0.1"
    port: Port = 8787
    # Serve the queue to remote workers and lease nothing in this process.
    queue_only: bool = False
    # Larger JSON bodies are refused with 413 (uploads are bounded by max_object_bytes).
    max_body_bytes: Annotated[int, Meta(ge=1024, le=64 * 1024 * 1024)] = 1024 * 1024
    # "token": /metrics needs a token (bearer or X-API-Key) of any role, not limited to a
    # tenant; "open": anyone who reaches the port may scrape it (a warning at start when
    # the port is not bound to loopback alone).
    metrics: Literal["open", "token"] = "token"
    # How long an upload URL from /uploads/create stays valid.
    upload_url_seconds: UploadUrlSeconds = 3600.0
    # With TURNSTILE_SECRET set, /uploads/create also takes a Cloudflare Turnstile token instead
    # of a bearer token, for these tenants only ("*": every tenant); the token is checked at
    # turnstile_verify_url (or TURNSTILE_VERIFY_URL), which must answer within the timeout.
    turnstile_tenants: list[TenantName] = msgspec.field(default_factory=list)
    turnstile_verify_url: UrlText = TURNSTILE_VERIFY_URL
    turnstile_timeout_seconds: Timeout = 10.0
    # What siteverify must report, when set: the page's hostname (one of these) and the widget's
    # action; empty: not checked.
    turnstile_hostnames: list[IdText] = msgspec.field(default_factory=list)
    turnstile_action: IdText | None = None
    # The one tenant the X-API-Key principals (ADMIN_API_KEY, QUEUE_API_KEY) are limited to;
    # None: all tenants, as the KV task API's keys were.
    api_key_tenant: TenantName | None = None
    # How long a dashboard sign-in (/ui) lasts before the token must be given again.
    session_seconds: Annotated[float, Meta(ge=60, le=30 * 86400)] = 8 * 3600.0


class LogConfig(_Table, frozen=True):
    level: Literal["debug", "info", "warning", "error"] = "info"
    # auto: JSON when stderr is not a terminal, coloured lines when it is.
    format: Literal["auto", "json", "console"] = "auto"


class ScheduleConfig(_Table, frozen=True):
    """One ``[[schedules]]`` entry: a recurring job (`actors.queue.model.NewSchedule`).

    Every process that opens the queue writes these into it when it starts (a schedule of the
    same tenant and name is replaced; the same timing keeps its next tick); a schedule removed
    from the file stays in the queue until `schedules delete` removes it.
    """

    name: ScheduleName
    tenant_id: IdText
    # The object each tick's job reads; under "{tenant_id}/".
    r2_key: IdText
    # Either a cron expression (five fields, or six with seconds last) read in `timezone`...
    cron: ScheduleCron | None = None
    # ... or an interval: ticks at the multiples of these seconds since the epoch.
    interval_seconds: ScheduleInterval | None = None
    timezone: TimeZoneName = "UTC"
    payload: Any = None
    priority: Priority = 0
    # A tick more than grace_seconds late was missed (every process was down): catch_up
    # enqueues one job for the latest missed tick when the queue comes back; skip enqueues none.
    missed: Literal["catch_up", "skip"] = "catch_up"
    grace_seconds: ScheduleGrace = 60.0


class Secret:
    """A string that never shows itself in ``repr``, ``str`` or logs; ``reveal()`` returns it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class Secrets(msgspec.Struct, kw_only=True, frozen=True):
    """Credentials, read only from the environment (never from a file on disk)."""

    google_api_key: Secret | None = None  # GOOGLE_API_KEY
    r2_access_key_id: Secret | None = None  # R2_ACCESS_KEY_ID
    r2_secret_access_key: Secret | None = None  # R2_SECRET_ACCESS_KEY
    api_token: Secret | None = None  # JWT_SECRET or EDGE_API_TOKEN (the seed's one secret)
    pg_password: Secret | None = None  # PGPASSWORD
    http_tokens: Secret | None = None  # ACTORS_TOKENS="token:role[:tenant],..." (http/auth.py)
    # The KV task API's keys, sent as X-API-Key: admin, and worker.
    admin_api_key: Secret | None = None  # ADMIN_API_KEY
    queue_api_key: Secret | None = None  # QUEUE_API_KEY
    turnstile_secret: Secret | None = None  # TURNSTILE_SECRET (uploads without a bearer token)
    # ACTORS_SESSION_KEYS="new,old": the dashboard's cookie keys, the first signing (http/_ui.py)
    session_keys: Secret | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Secrets:
        def get(*names: str) -> Secret | None:
            for name in names:
                if env.get(name):
                    return Secret(env[name])
            return None

        return cls(
            google_api_key=get("GOOGLE_API_KEY"),
            r2_access_key_id=get("R2_ACCESS_KEY_ID"),
            r2_secret_access_key=get("R2_SECRET_ACCESS_KEY"),
            api_token=get("JWT_SECRET", "EDGE_API_TOKEN"),
            pg_password=get("PGPASSWORD"),
            http_tokens=get("ACTORS_TOKENS"),
            admin_api_key=get("ADMIN_API_KEY"),
            queue_api_key=get("QUEUE_API_KEY"),
            turnstile_secret=get("TURNSTILE_SECRET"),
            session_keys=get("ACTORS_SESSION_KEYS"),
        )


class Config(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """The whole configuration. TOML table names and keys equal these attribute names."""

    runtime: RuntimeConfig = msgspec.field(default_factory=RuntimeConfig)
    queue: QueueConfig = msgspec.field(default_factory=QueueConfig)
    pipeline: PipelineConfig = msgspec.field(default_factory=PipelineConfig)
    storage: StorageConfig = msgspec.field(default_factory=StorageConfig)
    processor: ProcessorConfig = msgspec.field(default_factory=ProcessorConfig)
    supervision: SupervisionConfig = msgspec.field(default_factory=SupervisionConfig)
    http: HttpConfig = msgspec.field(default_factory=HttpConfig)
    log: LogConfig = msgspec.field(default_factory=LogConfig)
    # [[schedules]]: an array of tables, one per recurring job.
    schedules: tuple[ScheduleConfig, ...] = ()
    # Not a TOML table: filled from the environment by load_config.
    secrets: Secrets = msgspec.field(default_factory=Secrets)
    # The file this came from (None: embedded defaults); for messages only.
    source: str | None = None


#: The seed's environment variables that override a config key (environment wins over the file).
ENV_OVERRIDES: dict[str, tuple[str, str]] = {
    "BATCH_SIZE": ("queue", "batch_size"),
    "VISIBILITY_TIMEOUT": ("queue", "visibility_seconds"),
    "GEMINI_CHAT_MODEL": ("processor", "chat_model"),
    "GEMINI_EMBED_MODEL": ("processor", "embed_model"),
    "AI_GATEWAY_URL": ("processor", "base_url"),
    "R2_ENDPOINT": ("storage", "endpoint"),
    "R2_BUCKET": ("storage", "bucket"),
    "EDGE_BASE_URL": ("queue", "url"),
    "TURNSTILE_VERIFY_URL": ("http", "turnstile_verify_url"),
}

_TABLES: dict[str, type[_Table]] = {
    name: tp
    for name, tp in typing.get_type_hints(Config).items()
    if isinstance(tp, type) and issubclass(tp, _Table)
}


def require_package(module: str, extra: str, setting: str) -> None:
    """Raise ConfigError, naming the extra to install, if ``module`` cannot be imported.

    ``setting`` is what asked for it (``'[queue].backend = "postgres"'``): the embedded default
    needs no extra, and a feature that does fails at start-up in one line, not with a traceback
    from inside a running actor.
    """
    try:
        importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"{setting} needs {module}: pip install 'actors[{extra}]'") from None


def config_path_from(
    explicit: str | os.PathLike[str] | None, env: Mapping[str, str]
) -> Path | None:
    """Choose the config file: ``--config``, else ``ACTORS_CONFIG``, else the default if present."""
    if explicit is not None:
        return Path(explicit)
    if env.get("ACTORS_CONFIG"):
        return Path(env["ACTORS_CONFIG"])
    return DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.is_file() else None


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Read the config file named by ``path`` (or found by `config_path_from`) and the environment.

    With no file at all the embedded defaults apply, so a fresh checkout runs as it is.
    Raises `ConfigError` naming the file and the key for every mistake.
    """
    env = os.environ if env is None else env
    chosen = config_path_from(path, env)
    raw: dict[str, Any] = {}
    source = None
    if chosen is not None:
        source = str(chosen)
        try:
            text = chosen.read_bytes()
        except FileNotFoundError:
            raise ConfigError(
                f"config file {source} does not exist. Pass an existing file with --config "
                "or ACTORS_CONFIG, or neither to use the embedded defaults."
            ) from None
        except OSError as exc:
            raise ConfigError(f"cannot read config file {source}: {exc.strerror}") from None
        try:
            raw = msgspec.toml.decode(text)
        except msgspec.DecodeError as exc:
            raise ConfigError(f"{source}: not valid TOML: {exc}") from None
        if not isinstance(raw, dict):  # pragma: no cover - TOML documents are always tables
            raise ConfigError(f"{source}: expected TOML tables")
        for key in ("secrets", "source"):
            if key in raw:
                raise ConfigError(
                    f"{source}: [{key}] is not a config table. Secrets come from environment "
                    "variables only (GOOGLE_API_KEY, R2_ACCESS_KEY_ID, R2_SECRET_ACCESS_KEY, "
                    "JWT_SECRET or EDGE_API_TOKEN, ACTORS_TOKENS, ADMIN_API_KEY, QUEUE_API_KEY, "
                    "TURNSTILE_SECRET, PGPASSWORD), never from a file."
                )
    try:
        config = msgspec.convert(raw, Config, strict=True)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source or 'config'}: {_explain(exc)}") from None
    config = _apply_env(config, env)
    _check_together(config, source or "config")
    return msgspec.structs.replace(config, secrets=Secrets.from_env(env), source=source)


def _check_schedules(config: Config, source: str) -> None:
    """Refuse a schedule whose cron expression, time zone or timing is wrong, or a second
    schedule of the same name in one tenant (checked here, so that `config check` says so)."""
    seen: set[tuple[str, str]] = set()
    for i, schedule in enumerate(config.schedules):
        where = f"{source}: [[schedules]] #{i + 1} ({schedule.name!r})"
        try:
            Cadence(schedule.cron, schedule.interval_seconds, schedule.timezone)
        except InvalidArgument as exc:
            raise ConfigError(f"{where}: {exc}") from None
        key = (schedule.tenant_id, schedule.name)
        if key in seen:
            raise ConfigError(
                f"{where}: tenant {schedule.tenant_id!r} has two schedules of this name; a "
                "name is unique within a tenant, so rename one"
            )
        seen.add(key)


def _check_together(config: Config, source: str) -> None:
    """Refuse values that are each valid but wrong together."""
    _check_schedules(config, source)
    sup, queue = config.supervision, config.queue
    if sup.backoff_min_seconds > sup.backoff_max_seconds:
        raise ConfigError(
            f"{source}: [supervision].backoff_min_seconds = {sup.backoff_min_seconds:g} is more "
            f"than backoff_max_seconds = {sup.backoff_max_seconds:g}; the first restart waits the "
            "minimum and later ones grow up to the maximum"
        )
    for name, table in (
        ("queue", queue),
        ("storage", config.storage),
        ("processor", config.processor),
    ):
        base, cap = table.retry_base_seconds, table.retry_cap_seconds
        if base > cap:
            raise ConfigError(
                f"{source}: [{name}].retry_base_seconds = {base:g} is more than "
                f"retry_cap_seconds = {cap:g}; retries wait the base, doubling up to the cap"
            )


def _apply_env(config: Config, env: Mapping[str, str]) -> Config:
    tables: dict[str, _Table] = {}
    for var, (table, key) in ENV_OVERRIDES.items():
        value = env.get(var)
        if not value:
            continue
        current = tables.get(table, getattr(config, table))
        field_type = typing.get_type_hints(type(current), include_extras=True)[key]
        try:
            typed = msgspec.convert(value, field_type, strict=False)
            tables[table] = msgspec.convert(
                {**msgspec.structs.asdict(current), key: typed}, type(current)
            )
        except msgspec.ValidationError as exc:
            raise ConfigError(
                f"environment variable {var}={value!r} (sets [{table}].{key}): "
                f"{str(exc).split(' - at ')[0]}"
            ) from None
    return msgspec.structs.replace(config, **tables) if tables else config


def _explain(exc: msgspec.ValidationError) -> str:
    """Turn msgspec's ``... - at `$.queue.n``` into ``[queue].n: ...`` with a hint."""
    message, _, where = str(exc).partition(" - at ")
    parts = where.strip("`").split(".")[1:] if where else []
    if message.startswith("Object contains unknown field"):
        name = message.split("`")[1]
        if not parts:
            known = ", ".join([*(f"[{t}]" for t in _TABLES), "[[schedules]]"])
            hint = _did_you_mean(name, [*_TABLES, "schedules"])
            if hint:
                return f"unknown table [{name}]{hint} (the tables are {known})"
            return f"unknown table [{name}]; the tables are {known}"
        table, shown = _table_of(parts[0])
        fields = [f.name for f in msgspec.structs.fields(table)]
        keys = ", ".join(fields)
        hint = _did_you_mean(name, fields)
        if hint:
            return f"{shown} has no key `{name}`{hint} (its keys are {keys})"
        return f"{shown} has no key `{name}` (a typo?); its keys are {keys}"
    if message.startswith(("Expected `str` matching regex", "Expected `str` of length")):
        message = _FORMS.get(parts[-1] if parts else "", message)
    if not parts:
        return message
    if len(parts) == 1:
        if parts[0] == "schedules":
            return f"[[schedules]] must be an array of tables: {message}"
        return f"{_table_of(parts[0])[1]} must be a table: {message}"
    table, shown = _table_of(parts[0])
    if table is ScheduleConfig:
        return f"{shown}, {'.'.join(parts[1:])}: {message}"
    return f"{shown}.{'.'.join(parts[1:])}: {message}"


# What a string of a bounded form must be, by key (the regex or length msgspec names is no help).
_PATH_FORM = "expected a file path: not empty or blank, without NUL bytes, at most 4096 characters"
_FORMS = {
    "path": _PATH_FORM,
    "root": _PATH_FORM,
    "name": "expected a schedule name: 1 to 128 letters, digits, '_', '.' or '-', starting "
    "with a letter or digit",
    "tenant_id": "expected a tenant id of 1 to 1024 characters",
    "r2_key": "expected an object key of 1 to 1024 characters",
    "cron": "expected a cron expression of 1 to 256 characters",
    "timezone": "expected a time zone name of 1 to 64 characters, such as 'Europe/Berlin'",
}


def _table_of(part: str) -> tuple[type[msgspec.Struct], str]:
    """The Struct of a path's first part and how to show it: ``[queue]``, or
    ``[[schedules]] #2`` for msgspec's ``schedules[1]``."""
    if part.startswith("schedules["):
        return ScheduleConfig, f"[[schedules]] #{int(part[10:].rstrip(']')) + 1}"
    return _TABLES.get(part, _Table), f"[{part}]"


def _did_you_mean(word: str, choices: typing.Iterable[str]) -> str:
    """``"; did you mean 'x'"`` when one of ``choices`` is close to ``word``, else ``""``."""
    import difflib  # imported here: only a mistake pays for it

    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _toml_value(value: object) -> str:
    """``value`` as TOML (a payload's tables inline); JSON's strings and numbers are TOML's."""
    if isinstance(value, dict):
        items = ", ".join(
            f"{msgspec.json.encode(str(k)).decode()} = {_toml_value(v)}"
            for k, v in value.items()
            if v is not None  # TOML has no null
        )
        return f"{{ {items} }}" if items else "{}"
    if isinstance(value, list | tuple):
        return f"[{', '.join(_toml_value(v) for v in value if v is not None)}]"
    return msgspec.json.encode(value).decode()


def dump_config(config: Config) -> str:
    """Render ``config`` as TOML with secrets masked (for ``config show``)."""
    lines: list[str] = []
    if config.source:
        lines.append(f"# from {config.source} and the environment")
    for name in _TABLES:
        table = getattr(config, name)
        lines.append(f"\n[{name}]")
        for field in msgspec.structs.fields(table):
            value = getattr(table, field.name)
            if value is None:
                lines.append(f"# {field.name} is not set")
            else:
                lines.append(f"{field.name} = {msgspec.json.encode(value).decode()}")
    for schedule in config.schedules:
        lines.append("\n[[schedules]]")
        for field in msgspec.structs.fields(schedule):
            value = getattr(schedule, field.name)
            if value is not None:
                lines.append(f"{field.name} = {_toml_value(value)}")
    lines.append("\n# secrets, from the environment")
    for field in msgspec.structs.fields(config.secrets):
        state = "set (********)" if getattr(config.secrets, field.name) else "not set"
        lines.append(f"# {field.name}: {state}")
    return "\n".join(lines) + "\n"
