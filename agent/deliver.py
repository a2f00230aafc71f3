"""Delivering what waits in the queue, the same way wherever it is asked for: the ``upload`` command, the
daemon's delayed upload and the volunteer page's retry. By the settings' collector addresses and routes
(proxy, Tor, fronts), spending upload tokens (the default), or, identified, signing what waits unsigned."""

from __future__ import annotations

from gatewatch.core.envelope import sign

from .batches import TokenBatches
from .collector_api import make_session
from .keys import load_key
from .paths import DataPaths
from .queue import MeasurementQueue
from .run_records import RunOptions
from .runner import token_batches
from .settings import AgentSettings
from .tokens import TokenWallet
from .upload import Uploader, UploadReport

__all__ = ["upload_waiting"]


async def upload_waiting(
    paths: DataPaths, settings: AgentSettings, options: RunOptions, *, top_up: bool = True
) -> UploadReport:
    """Upload what waits. ``top_up=False``: spend only the tokens the wallet holds (the daemon's delayed
    upload: its pass topped the wallet up when it began, so issuance does not come right before spending).
    Raises :class:`~gatewatch.agent.keys.SigningKeyError` without a usable key."""
    with MeasurementQueue(paths.queue, settings.queue) as queue:
        session = make_session(
            source_address=options.source_address, ca_file=options.ca_file, route=options.route
        )
        async with session:
            batches = None
            key = load_key(paths.key)
            if settings.identified:  # rows queued unsigned before a switch to identified mode
                queue.sign_unsigned(lambda payload: sign(payload, key))
            elif top_up:
                batches = await token_batches(options, queue, key, session)
            else:
                batches = TokenBatches(queue, TokenWallet(queue))
            uploader = Uploader(
                queue, options.collector_addresses, session, batch_size=settings.upload_batch, batches=batches
            )
            return await uploader.upload_pending()
