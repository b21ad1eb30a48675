"""SupabaseStore: the store over Supabase's REST gateway (PostgREST), one HTTP request per call.

Every call is one RPC to the SQL function ``PostgresStore`` runs too (``stores.functions``),
in one transaction; this module is only the transport. Writes carry a request id whose
result the function records, so a transport error (a dropped keep-alive connection, a
5xx, a timeout) is retried with backoff and the same request id: a retry after the write
committed returns the recorded result and never writes twice.

It uses Supabase's ``postgrest`` client on one long-lived HTTP client. The service
key is sent in headers only and never appears in logs or errors.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Self

import httpx
from postgrest import AsyncPostgrestClient
from postgrest.exceptions import APIError

from convmem.clocks import WallClock, utc_now
from convmem.errors import ConfigurationError, StoreError, StoreUnavailableError
from convmem.stores.functions import ROW_FIELDS, TIME_FIELDS, Call, FunctionStore, Row, refusal
from convmem.stores.migrations import check_readable

if TYPE_CHECKING:
    from convmem.limits import ThreadLimits

log = logging.getLogger("convmem.stores")

SCHEMA_VERSION: Final = 112  # the newest migration the store needs (unannounced)
_RETRYABLE_STATUS: Final = frozenset({"502", "503", "504", "520", "522", "524"})
_TIME_INDEXES: Final = tuple(i for i, name in enumerate(ROW_FIELDS) if name in TIME_FIELDS)


class SupabaseStore(FunctionStore):
    """``supabase+https://<project>.supabase.co`` (or ``supabase://<project>.supabase.co``)."""

    scheme = "supabase"
    records_requests = True

    def __init__(
        self,
        base_url: str,
        service_key: str,
        *,
        limits: ThreadLimits | None = None,
        clock: WallClock = utc_now,
        timeout: float = 3.0,
        retries: int = 3,
        backoff: float = 0.05,
        deadline: float = 5.0,
    ) -> None:
        super().__init__(limits=limits, clock=clock)
        if not service_key:
            raise ConfigurationError(
                "the Supabase store needs the service role key: set SUPABASE_SERVICE_ROLE_KEY "
                "(or SUPABASE_KEY)"
            )
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.backoff = backoff
        self.deadline = deadline  # a call and all its retries end within this
        self.request_count = 0  # HTTP requests sent, retries included
        self._key = service_key
        self._timeout = min(timeout, deadline)  # per attempt
        self._client: AsyncPostgrestClient | None = None

    def __repr__(self) -> str:  # never show the key
        return f"SupabaseStore({self.base_url!r})"

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        service_key: str | None = None,
        project_url: str | None = None,
        **options: Any,
    ) -> Self:
        """``supabase+https://HOST`` or ``supabase+http://HOST``; ``supabase://HOST`` is https.

        A bare ``supabase://`` takes the project from ``project_url`` (``SUPABASE_URL``,
        read by ``Settings``). The key is ``service_key``; this reads no environment.
        """
        scheme, _, rest = url.partition("://")
        if scheme == "supabase":
            base = (project_url or "") if not rest.strip("/") else f"https://{rest}"
        elif scheme in ("supabase+https", "supabase+http"):
            base = f"{scheme.removeprefix('supabase+')}://{rest}"
        else:
            raise ConfigurationError(f"not a Supabase store URL: {scheme}://…")
        if not base:
            raise ConfigurationError(
                "supabase:// needs the project URL: set SUPABASE_URL (https://<project>.supabase.co)"
            )
        return cls(base, service_key or "", **options)

    # -- lifetime --------------------------------------------------------------

    async def open(self, *, migrate: bool = True) -> None:
        if self._client is not None:
            return
        headers = {
            "apikey": self._key,
            "Authorization": f"Bearer {self._key}",
            "Accept": "application/json",
            "Content-Type": "application/json",
        }
        # One long-lived HTTP client: its keep-alive connections serve every call. Retries
        # are ours (the client's own retry skips POST, and every call here is a POST).
        base = f"{self.base_url}/rest/v1"
        session = httpx.AsyncClient(base_url=base, headers=headers, timeout=self._timeout)
        self._client = AsyncPostgrestClient(
            base, headers=headers, http_client=session, retry_enabled=False
        )
        if migrate:
            await self.migrate()

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def migrate(self) -> list[str]:
        """The REST gateway cannot run DDL: check the functions are there, or say how."""
        try:
            version = await self.schema_version()
        except _MissingFunctionError:
            version = 0  # no convmem schema at all
        if version < SCHEMA_VERSION:
            raise ConfigurationError(
                f"the convmem schema in {self.base_url} is missing or old (version {version}, "
                f"needs {SCHEMA_VERSION}): apply it with `convmem migrate --store "
                "'postgresql://…?migrations=supabase'` (it upgrades an older one too), or, "
                "on a new project, paste src/convmem/stores/migrations/postgres/schema.sql "
                "then supabase/security.sql into Supabase's SQL editor"
            )
        if version > SCHEMA_VERSION:  # migrated by a newer release: may this one run?
            readable_by = await self._value(Call("convmem_readable_by", {}, returns_rows=False))
            check_readable(int(readable_by or 0), {version})
        return []

    async def ping(self) -> None:
        await self.schema_version()

    # -- the one place requests are sent and errors translated ------------------------

    async def _rows(self, call: Call, *, thread_id: str = "") -> list[Row]:
        found = await self._rpc(call, thread_id)
        return [_row(item) for item in found]

    async def _value(self, call: Call) -> Any:
        return await self._rpc(call, "")

    async def _rpc(self, call: Call, thread_id: str) -> Any:
        if self._client is None:
            raise StoreError("the Supabase store is not open: use 'async with' or call open()")
        function, params = call.function, {k: _json_value(v) for k, v in call.args.items()}
        started = time.monotonic()
        attempt = 0
        while True:
            self.request_count += 1
            # Each attempt ends by the call's deadline: a retry gets the time that is left.
            remaining = self.deadline - (time.monotonic() - started)
            try:
                async with asyncio.timeout(remaining):
                    response = await self._client.rpc(function, params).execute()
                return response.data
            except TimeoutError:
                failure: str = f"timed out (the {self.deadline:g} s deadline)"
            except APIError as exc:
                if exc.code in _RETRYABLE_STATUS and attempt < self.retries:
                    failure = f"HTTP {exc.code}"
                else:
                    raise self._translate(exc, thread_id) from None
            except httpx.TransportError as exc:  # timeouts included
                kind = type(exc).__name__
                timed_out = isinstance(exc, httpx.TimeoutException)
                failure = f"timed out ({kind})" if timed_out else f"failed ({kind}: {exc})"
                if attempt >= self.retries:
                    raise StoreUnavailableError(
                        f"Supabase {function} {failure} after {attempt + 1} attempts; retry later"
                    ) from None
            pause = self.backoff * 4**attempt
            if time.monotonic() - started + pause >= self.deadline:
                raise StoreUnavailableError(
                    f"Supabase {function} {failure}; no time left for another attempt within "
                    f"{self.deadline:g} s: retry later"
                )
            log.warning(
                "Supabase %s %s; retrying (%d/%d)", function, failure, attempt + 1, self.retries
            )
            await asyncio.sleep(pause)
            attempt += 1

    def _translate(self, exc: APIError, thread_id: str) -> Exception:
        """The gateway's error body as one of convmem's errors (one place, no key in it)."""
        refused = refusal(
            exc.code, exc.details, thread_id=thread_id, max_turns=self.limits.max_turns
        )
        return refused or _gateway_error(exc)


def _gateway_error(exc: APIError) -> Exception:
    message = exc.message or "request failed"
    match exc.code:
        case "PGRST202" | "42883":
            return _MissingFunctionError(
                f"a convmem function is missing in Supabase ({message}): apply the migrations"
            )
        case "401" | "403" | "PGRST301" | "PGRST302" | "42501":
            return ConfigurationError(f"Supabase refused the service key: {message}")
    if exc.code and exc.code[:1] in "5" and exc.code.isdigit():
        return StoreUnavailableError(f"Supabase answered HTTP {exc.code}: {message}; retry later")
    return StoreError(f"Supabase error {exc.code}: {message}")


class _MissingFunctionError(ConfigurationError):
    """The gateway knows no such function: the schema was not applied."""


def _json_value(value: Any) -> Any:
    return value.astimezone(UTC).isoformat() if isinstance(value, datetime) else value


def _row(item: dict[str, Any]) -> Row:
    """A convmem_row as PostgREST sends it (a JSON object) as values in ROW_FIELDS order."""
    values = [item[name] for name in ROW_FIELDS]
    for index in _TIME_INDEXES:
        if values[index] is not None:
            values[index] = datetime.fromisoformat(values[index]).astimezone(UTC)
    return values
