"""``GET /api/v1/geolocate``: the caller's network (ASN, country, name) from the operator's databases.

The answer also echoes the address the collector saw (``probe_ip``; behind the operator's trusted proxies,
the client's as they report it): the agent needs it to scrub its own public address from everything it
records before signing. That echo is the only use of the address beyond the lookup: it is not logged (the
access log is replaced), cached, counted or stored.
"""

from __future__ import annotations

from aiohttp import web

from gatewatch.core.vocabulary import WITHHELD_ASN, WITHHELD_CC
from gatewatch.core.wire import Geolocation

from .appkeys import GEO_KEY
from .client_address import client_address
from .geoip import GeoInfo
from .responses import model_response

__all__ = ["GEOLOCATE_PATH", "add_geolocate_routes", "geolocation_answer"]

GEOLOCATE_PATH = "/api/v1/geolocate"


def geolocation_answer(info: GeoInfo | None, address: str) -> Geolocation:
    """OONI's withheld values (AS0, ZZ, empty name) for whatever the databases do not know."""
    info = info or GeoInfo()
    return Geolocation(
        probe_asn=f"AS{info.asn}" if info.asn is not None else WITHHELD_ASN,
        probe_cc=info.cc.upper() if info.cc else WITHHELD_CC,
        probe_network_name=info.network_name or "",
        probe_ip=address,
    )


async def handle_geolocate(request: web.Request) -> web.Response:
    address = client_address(request) or ""
    geo = request.app[GEO_KEY]
    info = geo.lookup(address) if geo is not None and address else None
    # A proxy or browser must not keep a copy of someone's address.
    return model_response(geolocation_answer(info, address), headers={"Cache-Control": "no-store"})


def add_geolocate_routes(app: web.Application) -> None:
    app.router.add_get(GEOLOCATE_PATH, handle_geolocate)
