"""``gatewatch-collector``: ``serve`` the HTTP API, ``migrate`` a database, ``export`` daily files,
``import-ooni`` OONI's published measurements.

Flags override ``GATEWATCH_*`` environment variables, which override the ``--config`` TOML file.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from .export_cmd import PARTITION_FORMATS, export_selection
from .logging import configure_logging
from .research import BadQuery, parse_filter
from .serve import serve_app
from .settings import Settings, SettingsError, load_settings
from .store import MeasurementFilter, StoreError, open_store
from .verify_cmd import load_issuer_keys, verify_file
from .workers import MAX_WORKERS, WorkersError, check_workers, run_workers

__all__ = ["cli", "main"]

log = logging.getLogger("gatewatch.collector")
cli = typer.Typer(help="The gatewatch collector.", no_args_is_help=True, add_completion=False)

ConfigOption = Annotated[Path | None, typer.Option("--config", help="TOML settings file.", dir_okay=False)]
DbOption = Annotated[str | None, typer.Option("--db", help="sqlite:///PATH or postgresql://...")]


def _settings(flags: dict[str, Any], config: Path | None) -> Settings:
    try:
        return load_settings(flags, config_file=config)
    except SettingsError as exc:
        raise typer.BadParameter(str(exc)) from None


# Long because typer reads each option from the signature: one parameter (and one flag entry) per setting.
@cli.command()
def serve(
    listen: Annotated[str | None, typer.Option("--listen", help="HOST:PORT (port 0: any free port).")] = None,
    db: DbOption = None,
    config: ConfigOption = None,
    asn_db: Annotated[
        list[Path] | None, typer.Option("--asn-db", help="IP→ASN database (CSV or MMDB); repeatable.")
    ] = None,
    country_db: Annotated[
        list[Path] | None, typer.Option("--country-db", help="IP→country database (CSV or MMDB); repeatable.")
    ] = None,
    log_level: Annotated[str | None, typer.Option("--log-level", help="DEBUG, INFO, WARNING, ERROR.")] = None,
    max_body_bytes: Annotated[
        int | None, typer.Option("--max-body-bytes", help="Largest upload body, as sent and decoded.")
    ] = None,
    header_timeout_seconds: Annotated[
        float | None,
        typer.Option("--header-timeout-seconds", help="A request's head (and an idle keep-alive) must come."),
    ] = None,
    body_timeout_seconds: Annotated[
        float | None,
        typer.Option("--body-timeout-seconds", help="An upload's whole body must arrive within."),
    ] = None,
    max_concurrent_uploads: Annotated[
        int | None, typer.Option("--max-concurrent-uploads", help="Uploads read at once; more get 503.")
    ] = None,
    max_concurrent_exports: Annotated[
        int | None, typer.Option("--max-concurrent-exports", help="API exports run at once; more get 503.")
    ] = None,
    control_resolver: Annotated[
        str | None, typer.Option("--control-resolver", help="IP[:PORT] the control's own probes ask.")
    ] = None,
    ca_file: Annotated[
        str | None, typer.Option("--ca-file", help="PEM roots the control trusts (default: the system's).")
    ] = None,
    control_allow_net: Annotated[
        list[str] | None,
        typer.Option("--control-allow-net", help="CIDR the control may reach though not public (labs)."),
    ] = None,
    trusted_proxy: Annotated[
        list[str] | None,
        typer.Option(
            "--trusted-proxy", help="CIDR of a load balancer whose X-Forwarded-For is believed; repeatable."
        ),
    ] = None,
    control_cache_seconds: Annotated[
        float | None, typer.Option("--control-cache-seconds", help="How long a control answer is reused.")
    ] = None,
    control_concurrency: Annotated[
        int | None, typer.Option("--control-concurrency", help="Control measurements running at once.")
    ] = None,
    control_rate: Annotated[
        float | None, typer.Option("--control-rate", help="New control measurements per second (global).")
    ] = None,
    control_burst: Annotated[
        int | None, typer.Option("--control-burst", help="Burst of new control measurements.")
    ] = None,
    test_list: Annotated[
        list[str] | None,
        typer.Option("--test-list", help="CC=FILE (Citizen Lab CSV); global=FILE for every country."),
    ] = None,
    attribution_window_seconds: Annotated[
        float | None, typer.Option("--attribution-window-seconds", help="Attribution's sliding window.")
    ] = None,
    attribution_min_networks: Annotated[
        int | None, typer.Option("--attribution-min-networks", help="Networks sharing a fingerprint (>= 2).")
    ] = None,
    attribution_gateway_share: Annotated[
        float | None, typer.Option("--attribution-gateway-share", help="Share of networks measured, (0, 1].")
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            help=f"Processes serving the listening socket (1-{MAX_WORKERS}; above 1: PostgreSQL only).",
        ),
    ] = 1,
) -> None:
    """Serve the collector's HTTP API until SIGINT or SIGTERM."""
    flags = {
        "listen": listen,
        "db": db,
        "asn_db": asn_db,
        "country_db": country_db,
        "log_level": log_level,
        "max_body_bytes": max_body_bytes,
        "header_timeout_seconds": header_timeout_seconds,
        "body_timeout_seconds": body_timeout_seconds,
        "max_concurrent_uploads": max_concurrent_uploads,
        "max_concurrent_exports": max_concurrent_exports,
        "control_resolver": control_resolver,
        "ca_file": ca_file,
        "control_allow_net": control_allow_net,
        "trusted_proxies": trusted_proxy,
        "control_cache_seconds": control_cache_seconds,
        "control_concurrency": control_concurrency,
        "control_rate": control_rate,
        "control_burst": control_burst,
        "test_list": test_list,
        "attribution_window_seconds": attribution_window_seconds,
        "attribution_min_networks": attribution_min_networks,
        "attribution_gateway_share": attribution_gateway_share,
    }
    settings = _settings(flags, config)
    try:
        check_workers(settings.db, workers)
    except WorkersError as exc:
        raise typer.BadParameter(str(exc), param_hint="--workers") from None
    configure_logging(settings.log_level)
    try:
        if workers == 1:
            asyncio.run(serve_app(settings))
        else:
            raise typer.Exit(run_workers(settings, workers))
    except (StoreError, OSError, SettingsError) as exc:  # SettingsError: e.g. an unreadable test list
        log.error("cannot serve", extra={"error": str(exc)})
        raise typer.Exit(1) from None


@cli.command()
def migrate(db: DbOption = None, config: ConfigOption = None) -> None:
    """Bring the database's schema up to date, then exit."""
    settings = _settings({"db": db}, config)
    configure_logging(settings.log_level)

    async def run() -> int:
        store = await open_store(settings.db)
        try:
            return int(getattr(store, "schema_version", 0))
        finally:
            await store.close()

    try:
        version = asyncio.run(run())
    except StoreError as exc:
        log.error("migration failed", extra={"error": str(exc)})
        raise typer.Exit(1) from None
    typer.echo(f"schema version {version}")


def _export_filter(filters: dict[str, str | None]) -> MeasurementFilter:
    """The same filters, spelt and checked the same way, as GET /api/v1/measurements/export."""
    try:
        return parse_filter({name: value for name, value in filters.items() if value is not None})
    except BadQuery as exc:
        raise typer.BadParameter(exc.detail) from None


@cli.command()
def export(
    out: Annotated[
        Path,
        typer.Option("--out", help="Folder for date=YYYY-MM-DD/cc=XX/measurements.* and _manifest.json."),
    ],
    db: DbOption = None,
    config: ConfigOption = None,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="jsonl (measurements with the server's verdict), csv or parquet (the summary), "
            "ooni (OONI Web Connectivity).",
        ),
    ] = "jsonl",
    cc: Annotated[str | None, typer.Option("--cc", help="Country code, e.g. KH.")] = None,
    asn: Annotated[str | None, typer.Option("--asn", help="Network, e.g. AS64501.")] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="ISO 8601 start time, inclusive (UTC).")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="ISO 8601 start time, exclusive (UTC).")
    ] = None,
    test_name: Annotated[str | None, typer.Option("--test-name", help="e.g. web.")] = None,
    domain: Annotated[str | None, typer.Option("--domain", help="Host name of the input URL.")] = None,
    input_url: Annotated[str | None, typer.Option("--input", help="Exact input URL.")] = None,
    anomaly: Annotated[str | None, typer.Option("--anomaly", help="true or false.")] = None,
    blocking: Annotated[
        str | None, typer.Option("--blocking", help="false, dns, tcp_ip, http-failure, ...")
    ] = None,
) -> None:
    """Write the selected measurements as daily, per-country files (replacing those days' files), hive-style
    (date=YYYY-MM-DD/cc=XX/), with a manifest of row counts and SHA-256 sums."""
    if fmt not in PARTITION_FORMATS:
        raise typer.BadParameter(f"--format: one of {', '.join(PARTITION_FORMATS)}")
    selection = _export_filter(
        {
            "probe_cc": cc,
            "probe_asn": asn,
            "since": since,
            "until": until,
            "test_name": test_name,
            "domain": domain,
            "input": input_url,
            "anomaly": anomaly,
            "blocking": blocking,
        }
    )
    settings = _settings({"db": db}, config)
    configure_logging(settings.log_level)

    async def run() -> list[Path]:
        store = await open_store(settings.db)
        try:
            return await export_selection(store, selection, out, fmt)
        finally:
            await store.close()

    try:
        written = asyncio.run(run())
    except (StoreError, OSError) as exc:
        log.error("export failed", extra={"error": str(exc)})
        raise typer.Exit(1) from None
    for path in written:
        typer.echo(str(path))
    log.info("exported", extra={"files": len(written), "format": fmt})


@cli.command()
def verify(
    file: Annotated[Path, typer.Argument(help="An export: JSON Lines, CSV or Parquet (gzipped or not).")],
    issuer_keys: Annotated[
        str, typer.Option("--issuer-keys", help="GET /api/v1/issuer-keys's JSON: a file or an http(s) URL.")
    ],
) -> None:
    """Re-verify an export offline: every token and signature, against the published issuer keys. Names
    every measurement that fails; exit status 1 when one does."""
    try:
        keys = load_issuer_keys(issuer_keys)
        report = verify_file(file, keys)
    except (OSError, ValueError) as exc:  # unreadable file or keys (pydantic's ValidationError is one)
        typer.echo(f"cannot verify: {exc}", err=True)
        raise typer.Exit(2) from None
    for failure in report.failures:
        typer.echo(f"FAIL {failure.measurement_uid} (record {failure.line}): {failure.reason}")
    typer.echo(
        f"{report.verified} verified, {len(report.failures)} failed, "
        f"{report.unverifiable} signed by a long-term key (not verifiable from an export), "
        f"{report.unsigned} imported from OONI (unsigned)"
    )
    if report.failures:
        raise typer.Exit(1)


@cli.command("import-ooni")
def import_ooni(
    files: Annotated[
        list[Path], typer.Argument(help="OONI measurement files: JSONL or JSONL.gz.", metavar="FILE")
    ],
    db: DbOption = None,
    config: ConfigOption = None,
    asn_db: Annotated[
        list[Path] | None,
        typer.Option(
            "--asn-db", help="IP→ASN database (CSV or MMDB) for the DNS answers' networks; repeatable."
        ),
    ] = None,
) -> None:
    """Judge OONI Web Connectivity measurements with gatewatch's analysis and store them, marked as imported
    and unsigned (flag ooni_import). Lines that are not Web Connectivity, or cannot be read, are skipped and
    counted; importing a file again stores nothing twice."""
    from gatewatch.analysis import load_default_fingerprints

    from .geoip import GeoDB
    from .import_ooni import import_files

    for path in files:
        if not path.is_file():
            raise typer.BadParameter(f"{path}: not a readable file")
    settings = _settings({"db": db, "asn_db": asn_db}, config)
    configure_logging(settings.log_level)

    async def run() -> Any:
        fingerprints = load_default_fingerprints()
        geo = GeoDB.load(settings.asn_db) if settings.asn_db else None
        store = await open_store(settings.db)
        try:
            return await import_files(
                files, store, fingerprints, routable=settings.control_allow_net, geo=geo
            )
        finally:
            await store.close()

    try:
        report = asyncio.run(run())
    except (StoreError, OSError, EOFError) as exc:  # EOFError: a truncated .gz
        log.error("import failed", extra={"error": str(exc)})
        raise typer.Exit(1) from None
    skipped = ", ".join(f"{reason} {count}" for reason, count in sorted(report.skipped.items())) or "none"
    typer.echo(
        f"lines {report.lines}, imported {report.imported}, already stored {report.duplicates}, "
        f"skipped {sum(report.skipped.values())} ({skipped})"
    )


def main() -> None:
    cli()


if __name__ == "__main__":  # python -m gatewatch.collector.cli
    main()
