"""The commands that measure and deliver: ``run`` (one pass), ``daemon`` (passes on a schedule, for
systemd) and ``upload`` (deliver what waits, without measuring). Each takes ``--proxy``/``--tor`` for how
the collector is reached (the probes never use them)."""

# Annotations stay objects, not text (no __future__ import): see cli_common.

from pathlib import Path
from typing import Annotated

import typer

from .cli_common import (
    CaFile,
    DataDir,
    PacketTraceFlag,
    Proxy,
    Resolver,
    Routable,
    SourceAddress,
    Tor,
    TraceControlDomain,
)

__all__ = ["daemon", "run", "upload"]

Collectors = Annotated[
    list[str], typer.Option("--collector", help="Collector URL (repeatable; tried in order).")
]
UploadDelay = Annotated[
    str | None,
    typer.Option(
        "--upload-delay",
        help="MIN[,MAX] seconds to wait, at random, between a pass and its upload (agent.toml's "
        "upload_delay; default 300,3600).",
    ),
]
InputFiles = Annotated[list[Path], typer.Option("--input-file", help="A Citizen Lab CSV test list.")]


def run(
    collector: Collectors = [],  # noqa: B006
    control: Annotated[
        str | None, typer.Option("--control", help="Control endpoint (default: the collector).")
    ] = None,
    inputs: Annotated[list[str], typer.Option("--input", help="A URL to measure (repeatable).")] = [],  # noqa: B006
    input_file: InputFiles = [],  # noqa: B006
    resolver: Resolver = None,
    ca_file: CaFile = None,
    source_address: SourceAddress = None,
    routable: Routable = [],  # noqa: B006
    packet_trace: PacketTraceFlag = False,
    trace_control_domain: TraceControlDomain = None,
    skip_category: Annotated[list[str], typer.Option("--skip-category", help="Category code to skip.")] = [],  # noqa: B006
    data_dir: DataDir = None,
    concurrency: Annotated[int | None, typer.Option("--concurrency", min=1, max=256)] = None,
    max_runtime: Annotated[float | None, typer.Option("--max-runtime", help="Seconds.", min=1)] = None,
    max_bytes: Annotated[int | None, typer.Option("--max-bytes", help="Download budget.", min=1)] = None,
    no_upload: Annotated[bool, typer.Option("--no-upload", help="Keep results local only.")] = False,
    delay_upload: Annotated[
        bool,
        typer.Option(
            "--delay-upload", help="Wait a random upload_delay before uploading (default: at once)."
        ),
    ] = False,
    upload_delay: UploadDelay = None,
    proxy: Proxy = None,
    tor: Tor = False,
    once: Annotated[bool, typer.Option("--once", help="A single pass (what `run` always does).")] = True,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Measure the test list once, then upload at once (unless --no-upload; --delay-upload waits first,
    as the daemon does)."""
    from . import run_commands

    run_commands.run(
        collector=collector,
        control=control,
        inputs=inputs,
        input_file=input_file,
        resolver=resolver,
        ca_file=ca_file,
        source_address=source_address,
        routable=routable,
        packet_trace=packet_trace,
        trace_control_domain=trace_control_domain,
        skip_category=skip_category,
        data_dir=data_dir,
        concurrency=concurrency,
        max_runtime=max_runtime,
        max_bytes=max_bytes,
        no_upload=no_upload,
        delay_upload=delay_upload,
        upload_delay=upload_delay,
        proxy=proxy,
        tor=tor,
        once=once,
        verbose=verbose,
    )


def daemon(
    data_dir: DataDir = None,
    collector: Annotated[list[str], typer.Option("--collector", help="Collector URL (repeatable).")] = [],  # noqa: B006
    input_file: InputFiles = [],  # noqa: B006
    passes: Annotated[
        int | None, typer.Option("--passes", help="Stop after this many passes.", min=1)
    ] = None,
    resolver: Resolver = None,
    ca_file: CaFile = None,
    source_address: SourceAddress = None,
    routable: Routable = [],  # noqa: B006
    proxy: Proxy = None,
    tor: Tor = False,
    upload_delay: UploadDelay = None,
    packet_trace: PacketTraceFlag = False,
    trace_control_domain: TraceControlDomain = None,
) -> None:
    """Run passes on a schedule (interval plus jitter, from agent.toml); for systemd. Each pass's upload
    waits a random upload_delay (5 to 60 minutes by default) so that it does not follow the probes."""
    from . import run_commands

    run_commands.daemon(
        data_dir=data_dir,
        collector=collector,
        input_file=input_file,
        passes=passes,
        resolver=resolver,
        ca_file=ca_file,
        source_address=source_address,
        routable=routable,
        proxy=proxy,
        tor=tor,
        upload_delay=upload_delay,
        packet_trace=packet_trace,
        trace_control_domain=trace_control_domain,
    )


def upload(
    data_dir: DataDir = None,
    collector: Collectors = [],  # noqa: B006
    ca_file: CaFile = None,
    source_address: SourceAddress = None,
    proxy: Proxy = None,
    tor: Tor = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Deliver what waits in the queue, at once, without measuring (e.g. once a blocked collector is
    reachable)."""
    from . import run_commands

    run_commands.upload(
        data_dir=data_dir,
        collector=collector,
        ca_file=ca_file,
        source_address=source_address,
        proxy=proxy,
        tor=tor,
        verbose=verbose,
    )
