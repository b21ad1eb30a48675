"""``python -m convmem_bench``: run the benchmark, write results.json, plots and BENCHMARKS.md."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(add_completion=False)


@app.command()
def bench(
    quick: Annotated[
        bool, typer.Option(help="A short run that proves the bench still runs.")
    ] = False,
    admin_dsn: Annotated[
        str,
        typer.Option(
            envvar="CONVMEM_BENCH_ADMIN_DSN", help="PostgreSQL to create the bench database on."
        ),
    ] = "postgresql://postgres@127.0.0.1:5432/postgres",
    redis_url: Annotated[
        str, typer.Option("--redis", envvar="CONVMEM_BENCH_REDIS_URL")
    ] = "redis://127.0.0.1:6379/0",
    out: Annotated[
        Path | None, typer.Option(help="Write results.json, plots and BENCHMARKS.md here.")
    ] = None,
) -> None:
    """Measure convmem against the seed's flows and the raw drivers, side by side."""
    from convmem_bench.report import markdown, plots
    from convmem_bench.run import main_sync
    from convmem_bench.soak import SECTION

    report = main_sync(admin_dsn, redis_url, quick)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_bytes(report.to_json())
        images = [] if quick else plots(report, out / "plots")
        document = out.parent / "BENCHMARKS.md" if out.name == "bench" else out / "BENCHMARKS.md"
        soak = SECTION.of(document)  # make soak's figures outlive a make bench
        document.write_text(markdown(report, images), encoding="utf-8")
        if soak is not None:
            SECTION.write(document, soak)
        typer.echo(f"wrote {document}")


if __name__ == "__main__":
    app()
