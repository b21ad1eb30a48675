"""SupabaseStore: the store over Supabase's REST gateway (PostgREST), one HTTP request per call.

Every call is one RPC to a SQL function (``stores/migrations/supabase``) that runs in
one transaction: ``load``/``load_since``/``list``/``delete``/``purge`` read or delete,
``create``/``append`` assign ``seq``, enforce the limits and record their result
under a request id. A transport error (a dropped keep-alive connection, a 5xx, a
timeout) is retried with backoff and the same request id, so a retry after the
write committed returns the recorded result and never writes twice.

It uses Supabase's ``postgrest`` client on one long-lived HTTP client. The service
key is sent in headers only and never appears in logs or errors.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Self

import httpx
from postgrest import AsyncPostgrestClient
from postgrest.exceptions import APIError

from convmem.errors import (
    ConfigurationError,
    IdempotencyConflictError,
    InvalidInputError,
    StoreError,
    StoreUnavailableError,
    ThreadExpiredError,
    ThreadFullError,
    ThreadNotFoundError,
)
from convmem.models import Thread, ThreadPage
from convmem.stores._rows import (
    summary_from_values,
    thread_from_values,
    turn_from_json,
    turn_params,
)
from convmem.stores.base import (
    AppendResult,
    Clock,
    NewThread,
    SnapshotStore,
    check_list_limit,
    decode_cursor,
    encode_cursor,
    order_append_result,
    utc_now,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from convmem.limits import ThreadLimits
    from convmem.models import Turn

log = logging.getLogger("convmem.stores")

SCHEMA_VERSION: Final = 101  # the newest migration the functions come from
_RETRYABLE_STATUS: Final = frozenset({"502", "503", "504", "520", "522", "524"})


class SupabaseStore(SnapshotStore):
    """``supabase://`` (``SUPABASE_URL``) or ``supabase+https://<project>.supabase.co``."""

    scheme = "supabase"

    def __init__(
        self,
        base_url: str,
        service_key: str,
        *,
        limits: ThreadLimits | None = None,
        clock: Clock = utc_now,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.05,
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
        self.request_count = 0  # HTTP requests sent, retries included
        self._key = service_key
        self._timeout = timeout
        self._client: AsyncPostgrestClient | None = None

    def __repr__(self) -> str:  # never show the key
        return f"SupabaseStore({self.base_url!r})"

    @classmethod
    def from_url(cls, url: str, *, service_key: str | None = None, **options: Any) -> Self:
        scheme, _, rest = url.partition("://")
        if scheme == "supabase":
            base = os.environ.get("SUPABASE_URL", "") if not rest.strip("/") else f"https://{rest}"
        elif scheme in ("supabase+https", "supabase+http"):
            base = f"{scheme.removeprefix('supabase+')}://{rest}"
        else:
            raise ConfigurationError(f"not a Supabase store URL: {scheme}://…")
        if not base:
            raise ConfigurationError(
                "supabase:// needs SUPABASE_URL (https://<project>.supabase.co)"
            )
        key = (
            service_key
            or os.environ.get("SUPABASE_SERVICE_ROLE_KEY")
            or os.environ.get("SUPABASE_KEY")
        )
        return cls(base, key or "", **options)

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
        version = await self._rpc("convmem_ping", {})
        if not isinstance(version, int) or version < SCHEMA_VERSION:
            raise ConfigurationError(
                f"the convmem functions in {self.base_url} are missing or old (schema {version}); "
                "apply them with `convmem migrate --store 'postgresql://…?migrations=supabase'` "
                "or paste src/convmem/stores/migrations/postgres/*.sql then supabase/*.sql "
                "into Supabase's SQL editor"
            )
        return []

    async def ping(self) -> None:
        await self._rpc("convmem_ping", {})

    # -- the one place requests are sent and errors translated ------------------------

    async def _rpc(self, function: str, params: dict[str, Any], *, thread_id: str = "") -> Any:
        if self._client is None:
            raise StoreError("the Supabase store is not open: use 'async with' or call open()")
        attempt = 0
        while True:
            self.request_count += 1
            try:
                response = await self._client.rpc(function, params).execute()
                return response.data
            except APIError as exc:
                if exc.code in _RETRYABLE_STATUS and attempt < self.retries:
                    failure: str = f"HTTP {exc.code}"
                else:
                    raise _translate(exc, thread_id, self.limits.max_turns) from None
            except httpx.TransportError as exc:  # timeouts included
                kind = type(exc).__name__
                timed_out = isinstance(exc, httpx.TimeoutException)
                failure = f"timed out ({kind})" if timed_out else f"failed ({kind}: {exc})"
                if attempt >= self.retries:
                    raise StoreUnavailableError(
                        f"Supabase {function} {failure} after {attempt + 1} attempts"
                    ) from None
            log.warning(
                "Supabase %s %s; retrying (%d/%d)", function, failure, attempt + 1, self.retries
            )
            await asyncio.sleep(self.backoff * 4**attempt)
            attempt += 1

    # -- reads -----------------------------------------------------------------

    async def _read(
        self, thread_id: str, owner: str | None, since: int
    ) -> tuple[dict[str, Any], tuple[Turn, ...]] | None:
        found = await self._rpc(
            "convmem_load",
            {"p_id": thread_id, "p_owner": owner, "p_since": since, "p_now": _iso(self.clock())},
            thread_id=thread_id,
        )
        if not found:
            return None
        return _header(found["thread"]), tuple(turn_from_json(t) for t in found["turns"])

    async def list(
        self, *, owner: str | None, limit: int = 50, cursor: str | None = None
    ) -> ThreadPage:
        check_list_limit(limit)
        after_at, after_id = decode_cursor(cursor) if cursor is not None else (None, None)
        rows = await self._rpc(
            "convmem_list",
            {
                "p_owner": owner,
                "p_now": _iso(self.clock()),
                "p_limit": limit + 1,
                "p_after_at": _iso(after_at) if after_at else None,
                "p_after_id": after_id,
            },
        )
        summaries = tuple(summary_from_values(_header(r)) for r in rows[:limit])
        last = summaries[-1] if len(rows) > limit else None
        return ThreadPage(summaries, encode_cursor(last.updated_at, last.id) if last else None)

    # -- writes ----------------------------------------------------------------

    async def create(self, thread: NewThread, turns: Sequence[Turn] = ()) -> Thread:
        found = await self._rpc(
            "convmem_create",
            {
                "p_request_id": str(uuid.uuid4()),
                "p_id": thread.id,
                "p_tool_name": thread.tool_name,
                "p_parent_id": thread.parent_id,
                "p_owner": thread.owner,
                "p_metadata": dict(thread.metadata),
                "p_turns": _turns_json(turns),
                "p_now": _iso(self.clock()),
                "p_ttl_seconds": self.limits.ttl.total_seconds(),
                "p_max_turns": self.limits.max_turns,
            },
            thread_id=thread.id,
        )
        return thread_from_values(
            _header(found["thread"]), tuple(turn_from_json(t) for t in found["turns"])
        )

    async def append(
        self, thread_id: str, turns: Sequence[Turn], *, owner: str | None
    ) -> AppendResult:
        found = await self._rpc(
            "convmem_append",
            {
                "p_request_id": str(uuid.uuid4()),
                "p_id": thread_id,
                "p_owner": owner,
                "p_turns": _turns_json(turns),
                "p_now": _iso(self.clock()),
                "p_ttl_seconds": self.limits.ttl.total_seconds(),
                "p_max_turns": self.limits.max_turns,
            },
            thread_id=thread_id,
        )
        stored = [turn_from_json(t) for t in found["turns"]]
        return AppendResult(
            thread_id,
            found["version"],
            found["inserted"],
            order_append_result(turns, stored),
            _parse_time(found["updated_at"]),
            _parse_time(found["expires_at"]),
        )

    async def delete(self, thread_id: str, *, owner: str | None) -> bool:
        return bool(await self._rpc("convmem_delete", {"p_id": thread_id, "p_owner": owner}))

    async def purge_expired(self) -> int:
        return int(await self._rpc("convmem_purge", {"p_now": _iso(self.clock())}))


def _translate(exc: APIError, thread_id: str, max_turns: int) -> Exception:
    """The gateway's error body as one of convmem's errors (one place, no key in it)."""
    message = exc.message or "request failed"
    match exc.code:
        case "CM404":
            return ThreadNotFoundError(message, thread_id=thread_id)
        case "CM410":
            return ThreadExpiredError(message, thread_id=thread_id)
        case "CM413":
            return ThreadFullError(message, thread_id=thread_id, max_turns=max_turns)
        case "CM409":
            return IdempotencyConflictError(
                f"{message}; a retry must resend the same turn, a new turn needs a new key"
            )
        case "CM422":
            return InvalidInputError(message)
        case "PGRST202" | "42883":
            return ConfigurationError(
                f"a convmem function is missing in Supabase ({message}): apply the migrations"
            )
        case "401" | "403" | "PGRST301" | "PGRST302" | "42501":
            return ConfigurationError(f"Supabase refused the service key: {message}")
    if exc.code and exc.code[:1] in "5" and exc.code.isdigit():
        return StoreUnavailableError(f"Supabase answered HTTP {exc.code}: {message}")
    return StoreError(f"Supabase error {exc.code}: {message}")


def _turns_json(turns: Sequence[Turn]) -> list[dict[str, Any]]:
    return [{"ord": i, **turn_params(t)} for i, t in enumerate(turns, 1)]


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def _header(row: dict[str, Any]) -> dict[str, Any]:
    header = dict(row)
    for name in ("created_at", "updated_at", "expires_at"):
        header[name] = _parse_time(header[name])
    return header
