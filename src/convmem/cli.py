"""The ``convmem`` command line: migrations, thread administration and the demo."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Annotated, Literal, TypeVar

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from convmem import key_rotation
from convmem.assembly import build_store, encryption_of
from convmem.demo import DemoRequest, run_demo
from convmem.errors import ConfigurationError, ConvMemError, ThreadNotFoundError
from convmem.export import listed_thread_to_dict
from convmem.extras import needs_extra
from convmem.memory import Memory
from convmem.models import Thread, ThreadPage
from convmem.settings import Settings
from convmem.store_copy import CopyReport, Payloads, copy_threads
from convmem.stores import redact_url
from convmem.stores.sqlite import SqliteStore

T = TypeVar("T")

# Plain help (no Rich panels): it reads the same in a pipe and in a terminal.
app = typer.Typer(
    help="convmem: conversation memory for MCP servers and LLM tool servers.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)
threads_app = typer.Typer(
    help="Look at and manage stored threads.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(threads_app, name="threads")
console = Console()
errors = Console(stderr=True, soft_wrap=True)  # an error is one line, however long

StoreOption = Annotated[
    str | None,
    typer.Option("--store", help="Store URL; defaults to CONVMEM_STORE_URL or the SQLite file."),
]
OwnerOption = Annotated[
    str | None,
    typer.Option("--owner", help="The owner (client) whose threads; none: threads without one."),
]
CacheOption = Annotated[
    str | None,
    typer.Option("--cache", help="Redis URL of the L2 tier; defaults to CONVMEM_CACHE_URL."),
]
AllOwnersOption = Annotated[
    bool, typer.Option("--all-owners", help="Every owner's threads (an operator's view).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="JSON instead of text.")]
ThreadIdArgument = Annotated[
    str, typer.Argument(help="The thread's id (its continuation_id).", show_default=False)
]


def _failed(exc: ConvMemError) -> typer.Exit:
    """Print ``error: <message>`` (the message as written: an install hint's
    ``convmem[extra]`` is not Rich markup) and give the exit to raise."""
    errors.print(f"[bold red]error:[/] {escape(str(exc))}")
    return typer.Exit(1)


def _memory(store: str | None, cache: str | None = None, *, cached: bool = True) -> Memory:
    overrides: dict[str, str | None] = {}
    if store:
        overrides["store_url"] = store
    if cache:
        overrides["cache_url"] = cache
    if not cached:
        overrides["cache_url"] = None
    return Memory.from_settings(_settings(**overrides))


def _settings(**overrides: str | int | None) -> Settings:
    """Settings from the environment and the given (non-empty) options, or a clean exit."""
    try:
        return Settings.load(**{k: v for k, v in overrides.items() if v})
    except ConvMemError as exc:
        raise _failed(exc) from None


def _run(store: str | None, work: Callable[[Memory], Awaitable[T]]) -> T:
    """Open a Memory, run ``work`` with it, and turn convmem errors into a clean exit."""

    async def main() -> T:
        async with _memory(store) as memory:
            return await work(memory)

    try:
        return asyncio.run(main())
    except ConvMemError as exc:
        raise _failed(exc) from None


def _print_version(wanted: bool) -> None:
    if wanted:
        typer.echo(f"convmem {version('convmem')}")
        raise typer.Exit()


@app.callback()
def _configure(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log what convmem does (DEBUG) on stderr.")
    ] = False,
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )


@app.command()
def migrate(store: StoreOption = None) -> None:
    """Apply pending schema migrations (idempotent; first start does it too)."""

    async def main() -> list[str]:
        # The store alone: opening a Memory would apply the migrations and report nothing,
        # and check the encryption keys, which is no business of a schema upgrade.
        target = _memory(store, cached=False).store
        await target.open(migrate=False)
        try:
            return await target.migrate()
        finally:
            await target.aclose()

    try:
        applied = asyncio.run(main())
    except ConvMemError as exc:
        raise _failed(exc) from None
    url = redact_url(_settings(store_url=store).store.url)
    if applied:
        console.print(f"{url}: applied {', '.join(applied)}")
    else:
        console.print(f"{url}: nothing was pending; the schema is up to date")


@threads_app.command("list")
def list_threads(
    store: StoreOption = None,
    owner: OwnerOption = None,
    all_owners: AllOwnersOption = False,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Threads per page.")] = 20,
    cursor: Annotated[
        str | None, typer.Option(help="The next page: the cursor the previous page printed.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """List live threads, most recently updated first."""
    _one_owner_choice(owner, all_owners)

    async def page_of(memory: Memory) -> ThreadPage:
        if all_owners:
            return await memory.list_every_owners_threads(limit=limit, cursor=cursor)
        return await memory.list_threads(owner=owner, limit=limit, cursor=cursor)

    page = _run(store, page_of)
    if as_json:
        listing = {"threads": [listed_thread_to_dict(t) for t in page.threads]}
        typer.echo(orjson.dumps(listing | {"next_cursor": page.next_cursor}).decode())
        return
    columns = ("id", "owner", "tool", "turns", "updated (UTC)", "expires (UTC)", "parent")
    rows = [
        (
            t.id,
            t.owner or "-",
            t.tool_name or "-",
            str(t.turns),
            t.updated_at.strftime("%Y-%m-%d %H:%M"),
            t.expires_at.strftime("%Y-%m-%d %H:%M"),
            t.parent_id or "-",
        )
        for t in page.threads
    ]
    _print_rows(columns, rows)
    if page.next_cursor:
        errors.print(f"more: --cursor {page.next_cursor}", highlight=False)
    if not rows and not all_owners and cursor is None:
        errors.print(f"no live threads {_owned_by(owner)}; {_OWNER_HINT}", highlight=False)


@threads_app.command("show")
def show_thread(
    thread_id: ThreadIdArgument,
    store: StoreOption = None,
    owner: OwnerOption = None,
    all_owners: AllOwnersOption = False,
    as_json: JsonOption = False,
) -> None:
    """Print one thread as Markdown (or JSON)."""
    _one_owner_choice(owner, all_owners)
    chosen: Literal["markdown", "json"] = "json" if as_json else "markdown"
    text = _run(store, lambda m: _export(m, thread_id, owner, all_owners, chosen))
    typer.echo(text)


@threads_app.command("export")
def export(
    thread_id: ThreadIdArgument,
    store: StoreOption = None,
    owner: OwnerOption = None,
    all_owners: AllOwnersOption = False,
    format: Annotated[
        str, typer.Option("--format", help="markdown (the default) or json.")
    ] = "markdown",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file, not stdout.")
    ] = None,
) -> None:
    """Export one thread as Markdown or JSON, to stdout or a file."""
    _one_owner_choice(owner, all_owners)
    if format not in ("markdown", "json"):
        errors.print(f"[bold red]error:[/] unknown format {escape(format)!r}: use markdown or json")
        raise typer.Exit(2)
    chosen: Literal["markdown", "json"] = "json" if format == "json" else "markdown"
    text = _run(store, lambda m: _export(m, thread_id, owner, all_owners, chosen))
    if output is None:
        typer.echo(text)
    else:
        output.write_text(text, encoding="utf-8")
        console.print(f"wrote {output}", highlight=False)


@threads_app.command("delete")
def delete(
    thread_id: ThreadIdArgument,
    store: StoreOption = None,
    owner: OwnerOption = None,
    all_owners: AllOwnersOption = False,
) -> None:
    """Delete one thread and its turns."""
    _one_owner_choice(owner, all_owners)

    async def remove(memory: Memory) -> bool:
        found = await _owner_of(memory, thread_id, owner, all_owners)
        return await memory.delete_thread(thread_id, owner=found)

    if not _run(store, remove):
        raise _failed(_not_found(thread_id, owner))
    console.print(f"deleted {thread_id}", highlight=False)


@threads_app.command("update")
def update(
    thread_id: ThreadIdArgument,
    title: Annotated[str | None, typer.Option("--title", help="The thread's new title.")] = None,
    metadata: Annotated[
        str | None,
        typer.Option("--metadata", help="A JSON object that replaces the thread's metadata."),
    ] = None,
    store: StoreOption = None,
    owner: OwnerOption = None,
    all_owners: AllOwnersOption = False,
) -> None:
    """Rename a thread (--title) or replace its metadata; its turns stay."""
    _one_owner_choice(owner, all_owners)
    replacement = None if metadata is None else _json_object(metadata, "--metadata")

    async def change(memory: Memory) -> Thread:
        found = await _owner_of(memory, thread_id, owner, all_owners)
        try:
            return await memory.update_thread(
                thread_id, metadata=replacement, title=title, owner=found
            )
        except ThreadNotFoundError:
            if all_owners:
                raise
            raise _not_found(thread_id, owner) from None

    thread = _run(store, change)
    shown = orjson.dumps(dict(thread.metadata)).decode()
    console.print(f"updated {thread_id} (version {thread.version}): {shown}", highlight=False)


def _json_object(text: str, option: str) -> dict[str, object]:
    """``text`` as a JSON object, or a clean exit that says what is wrong with it."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        errors.print(f"[bold red]error:[/] {option} is not JSON: {escape(str(exc))}")
        raise typer.Exit(2) from None
    if not isinstance(value, dict):
        errors.print(f"[bold red]error:[/] {option} must be a JSON object, like '{{\"tag\": 1}}'")
        raise typer.Exit(2)
    return value


_OWNER_HINT = (
    "threads of an authenticated client belong to it (CONVMEM_TOKEN's client is owner"
    " 'default'): pass --owner NAME, or --all-owners to see every owner's"
)


def _owned_by(owner: str | None) -> str:
    return "without an owner" if owner is None else f"of owner {owner!r}"


def _not_found(thread_id: str, owner: str | None) -> ThreadNotFoundError:
    return ThreadNotFoundError(
        f"no live thread {thread_id} {_owned_by(owner)}; {_OWNER_HINT}", thread_id=thread_id
    )


def _one_owner_choice(owner: str | None, all_owners: bool) -> None:
    if owner is not None and all_owners:
        errors.print("[bold red]error:[/] pass --owner or --all-owners, not both")
        raise typer.Exit(2)


async def _owner_of(
    memory: Memory, thread_id: str, owner: str | None, all_owners: bool
) -> str | None:
    """``owner``, or with ``all_owners`` whoever owns the thread (one store read)."""
    if not all_owners:
        return owner
    found = await memory.find_thread_any_owner(thread_id)
    if found is None:
        raise ThreadNotFoundError(f"no live thread {thread_id}", thread_id=thread_id)
    return found.owner


async def _export(
    memory: Memory,
    thread_id: str,
    owner: str | None,
    all_owners: bool,
    format: Literal["markdown", "json"],
) -> str:
    found = await _owner_of(memory, thread_id, owner, all_owners)
    try:
        return await memory.export_thread(thread_id, owner=found, format=format)
    except ThreadNotFoundError:
        if all_owners:
            raise
        raise _not_found(thread_id, owner) from None


def _print_rows(columns: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    """A table on a terminal; tab-separated lines, header first, when piped (nothing cut
    to the terminal's width, and ready for ``cut`` and ``awk``)."""
    if not console.is_terminal:
        for line in (columns, *rows):
            typer.echo("\t".join(line))
        return
    table = Table(*columns[1:])
    table.add_column(columns[0], no_wrap=True, min_width=36)
    for row in rows:
        table.add_row(*row[1:], row[0])
    console.print(table)


@app.command("copy")
def copy_store(
    source: Annotated[
        str, typer.Option("--from", help="The store URL to copy from.", show_default=False)
    ],
    destination: Annotated[
        str, typer.Option("--to", help="The store URL to copy into.", show_default=False)
    ],
    reseal: Annotated[
        bool,
        typer.Option(
            "--reseal",
            help="Seal every thread under the first of CONVMEM_ENCRYPTION_KEYS on the way"
            " (re-keying; with CONVMEM_ENCRYPTION_ACCEPT_PLAINTEXT=1, encrypting a store"
            " held in clear).",
        ),
    ] = False,
    unseal: Annotated[
        bool,
        typer.Option(
            "--unseal", help="Write the threads in clear (opened with CONVMEM_ENCRYPTION_KEYS)."
        ),
    ] = False,
    replace: Annotated[
        bool,
        typer.Option(
            "--replace",
            help="Replace a destination thread that holds other content (default: report it).",
        ),
    ] = False,
    batch: Annotated[int, typer.Option(min=1, max=1000, help="Thread ids read per page.")] = 200,
) -> None:
    """Copy every thread from one store to another, then verify each one.

    Ids, owners, turns, summaries, fork links, versions and expiry are kept. Safe to run
    again: after a kill it copies what is missing, and it never writes a thread twice.
    """
    if reseal and unseal:
        raise _failed(ConfigurationError("choose one of --reseal and --unseal"))
    if source.strip() == destination.strip():
        raise _failed(ConfigurationError("--from and --to name the same store"))
    payloads = Payloads.RESEAL if reseal else Payloads.UNSEAL if unseal else Payloads.AS_STORED
    settings = _settings()
    try:
        origin = build_store(settings, source)
    except ConvMemError as exc:
        raise _failed(exc) from None
    if isinstance(origin, SqliteStore) and not Path(origin.path).exists():
        # (opening it would make an empty store, and the copy would copy nothing)
        raise _failed(ConfigurationError(f"there is no SQLite file at {origin.path} to copy from"))

    async def main() -> CopyReport:
        with _copy_progress() as show:
            async with origin as src, build_store(settings, destination) as dst:
                return await copy_threads(
                    src,
                    dst,
                    payloads=payloads,
                    sealing=encryption_of(settings),
                    replace_differing=replace,
                    batch=batch,
                    on_progress=show,
                )

    try:
        done = asyncio.run(main())
    except ConvMemError as exc:
        raise _failed(exc) from None
    console.print(
        f"copied {done.copied} thread(s) ({done.turns} turn(s)) from {redact_url(source)} to"
        f" {redact_url(destination)}; {done.present} already there, {done.replaced} replaced,"
        f" {done.gone} expired or deleted; verified {done.verified} of"
        f" {done.scanned - done.gone}",
        highlight=False,
    )
    for thread_id in done.differing:
        errors.print(
            f"[bold red]differs:[/] {thread_id} is in the destination with other content"
            " (kept; --replace overwrites it)",
            highlight=False,
        )
    for thread_id in done.mismatched:
        errors.print(
            f"[bold red]not verified:[/] {thread_id} is missing or different after the copy",
            highlight=False,
        )
    if not done.ok:
        raise typer.Exit(1)


@contextmanager
def _copy_progress() -> Iterator[Callable[[CopyReport], None]]:
    """A progress bar on a terminal; a line per hundred threads elsewhere (logs, CI)."""
    if not errors.is_terminal:

        def line(report: CopyReport) -> None:
            if report.scanned % 100 == 0 or report.scanned == report.total:
                errors.print(f"copy: {report.scanned}/{report.total} thread(s)", highlight=False)

        yield line
        return
    with Progress(console=errors, transient=True) as progress:
        task = progress.add_task("copying threads", total=None)

        def bar(report: CopyReport) -> None:
            progress.update(task, total=report.total, completed=report.scanned)

        yield bar


@threads_app.command("purge")
def purge(store: StoreOption = None) -> None:
    """Delete every expired thread."""
    console.print(f"purged {_run(store, lambda m: m.purge_expired())} expired thread(s)")


@app.command()
def keygen() -> None:
    """Print a new random encryption key for CONVMEM_ENCRYPTION_KEYS."""
    try:
        with needs_extra("encryption", "convmem keygen"):
            from convmem.encryption import new_key
    except ConvMemError as exc:
        raise _failed(exc) from None
    console.print(new_key(), highlight=False)


@app.command("rotate-keys")
def rotate_keys(
    store: StoreOption = None,
    after: Annotated[
        str | None, typer.Option("--after", help="Resume after this thread id (as printed).")
    ] = None,
    batch: Annotated[int, typer.Option(min=1, max=1000, help="Threads per page.")] = 100,
) -> None:
    """Seal every stored thread under the first of CONVMEM_ENCRYPTION_KEYS, online."""

    def report(progress: key_rotation.Rotation) -> None:
        console.print(
            f"scanned {progress.scanned} thread(s), resealed {progress.resealed}"
            f" ({progress.rows} row(s)), up to {progress.last_id}",
            highlight=False,
        )

    done = _run(
        store, lambda m: key_rotation.rotate_keys(m, after=after, batch=batch, on_batch=report)
    )
    console.print(
        f"done: {done.scanned} thread(s) scanned, {done.resealed} resealed, {done.gone} gone"
        f" or expired, {len(done.failed)} failed",
        highlight=False,
    )
    for thread_id, why in done.failed:
        errors.print(f"[bold red]failed:[/] {thread_id}: {why}", highlight=False)
    if done.failed:
        raise typer.Exit(1)


@app.command()
def demo(
    store: StoreOption = None,
    cache: CacheOption = None,
    continuations: Annotated[
        int, typer.Option(min=2, max=20, help="Continued requests after the first.")
    ] = 4,
) -> None:
    """Run the seed's validation scenario: start a thread, continue it, count round trips.

    Each request resumes the thread three times (as the seed's code paths did),
    builds the history, calls an offline echo model and saves both turns. A cold
    request runs in a fresh Memory (a new process); warm ones reuse it.
    """
    settings = _settings(store_url=store, cache_url=cache)
    tiers = "L1 + L2 Redis" if settings.cache.url else "L1 only"
    console.print(
        f"[bold]convmem demo[/] on {redact_url(settings.store.url)} ({tiers}, offline echo model)"
    )
    table = Table("request", "cache", "thread came from", "store reads", "store writes", "turns")

    def show(row: DemoRequest) -> None:
        table.add_row(
            str(row.number),
            row.kind,
            row.source,
            str(row.store_reads),
            str(row.store_writes),
            str(row.turns),
        )

    try:
        rows = asyncio.run(
            run_demo(
                lambda cached: _memory(store, cache, cached=cached),
                continuations,
                with_l2=settings.cache.url is not None,
                on_request=show,
            )
        )
    except ConvMemError as exc:
        raise _failed(exc) from None
    console.print(table)

    def budget(kind: str) -> str:
        picked = [r for r in rows if r.kind == kind]
        reads = max(r.store_reads for r in picked)
        writes = max(r.store_writes for r in picked)
        return f"{reads} read{'s' * (reads != 1)} + {writes} write{'s' * (writes != 1)}"

    summary = f"continued, cold cache: {budget('cold')}; warm: {budget('warm')}"
    if any(r.kind == "cold L1, warm L2" for r in rows):
        summary += f"; new process with Redis warm: {budget('cold L1, warm L2')}"
    console.print(summary + " (the server convmem replaces made 7 store calls per request)")


@app.command()
def serve(
    store: StoreOption = None,
    cache: CacheOption = None,
    host: Annotated[str | None, typer.Option(help="Defaults to CONVMEM_HOST or 127.0.0.1.")] = None,
    port: Annotated[int | None, typer.Option(help="Defaults to CONVMEM_PORT or 8079.")] = None,
) -> None:
    """Serve MCP over Streamable HTTP (/mcp), the WebSocket daemon (/ws), /health, /metrics."""
    from convmem.server.app import serve_http, warn_if_exposed

    overrides: dict[str, str | int | None] = {"store_url": store, "cache_url": cache, "host": host}
    if port is not None:
        overrides["port"] = port
    settings = _settings(**overrides)
    warning = warn_if_exposed(settings)
    if warning:
        errors.print(f"[bold red]{escape(warning)}[/]")

    def listening() -> None:
        console.print(
            f"convmem on http://{settings.server.host}:{settings.server.port}: MCP at /mcp,"
            " WebSocket at /ws, /health, /metrics",
            highlight=False,
        )

    try:
        asyncio.run(serve_http(settings, on_listening=listening))
    except ConvMemError as exc:
        raise _failed(exc) from None
    except KeyboardInterrupt:
        pass


@app.command()
def mcp(store: StoreOption = None, cache: CacheOption = None) -> None:
    """Serve MCP on stdin/stdout, for clients that launch their server as a subprocess."""
    from convmem.server.app import serve_stdio

    settings = _settings(store_url=store, cache_url=cache)
    try:
        asyncio.run(serve_stdio(settings))
    except ConvMemError as exc:
        raise _failed(exc) from None


@app.command()
def pal(store: StoreOption = None, cache: CacheOption = None) -> None:
    """Run pal-mcp-server (stdio) with convmem as its conversation storage."""
    from convmem.integrations.pal.run import run_pal

    settings = _settings(store_url=store, cache_url=cache)
    try:
        run_pal(settings)
    except ConvMemError as exc:
        raise _failed(exc) from None


def main(args: list[str] | None = None) -> None:
    app(args)
