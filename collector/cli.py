"""``gatewatch-collector``: ``serve`` the HTTP API, ``migrate`` a database.

Flags override ``GATEWATCH_*`` environment variables, which override the ``--config`` TOML file.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import Annotated, Any

import typer
from aiohttp import web

from .app import create_app
from .appkeys import INFLIGHT_KEY
from .logging import ACCESS_LOGGER_NAME, AccessLogger, configure_logging
from .settings import Settings, SettingsError, load_settings
from .store.base import StoreError, open_store

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


async def _serve(settings: Settings) -> None:
    app = create_app(settings)
    runner = web.AppRunner(
        app,
        access_log_class=AccessLogger,
        access_log=logging.getLogger(ACCESS_LOGGER_NAME),
        shutdown_timeout=settings.shutdown_timeout,
    )
    await runner.setup()  # opens the store (applying migrations) before anything is accepted
    try:
        site = web.TCPSite(runner, settings.listen_host, settings.listen_port)
        await site.start()
        # The port alone: log lines mask addresses, and the bound port matters when 0 was asked for.
        for address in runner.addresses:
            log.info("listening", extra={"port": address[1]})
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        log.info("stopping: finishing requests in flight", extra={"timeout_s": settings.shutdown_timeout})
        await site.stop()  # no new connections
        try:
            async with asyncio.timeout(settings.shutdown_timeout):
                await app[INFLIGHT_KEY].drain()
        except TimeoutError:
            log.warning("requests still in flight at the deadline", extra={"count": app[INFLIGHT_KEY].count})
    finally:
        await runner.cleanup()  # close connections, then the store
    log.info("stopped")


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
) -> None:
    """Serve the collector's HTTP API until SIGINT or SIGTERM."""
    flags = {"listen": listen, "db": db, "asn_db": asn_db, "country_db": country_db, "log_level": log_level}
    settings = _settings(flags, config)
    configure_logging(settings.log_level)
    try:
        asyncio.run(_serve(settings))
    except (StoreError, OSError) as exc:
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


def main() -> None:
    cli()
