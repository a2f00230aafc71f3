"""The network probes: DNS, TCP, TLS and HTTP, each one asyncio function that records what it saw as
:mod:`gatewatch.core.observations` and never raises for a network failure, and :mod:`.web`, the web
measurement that composes them. Probes need no root and never know whether they run in a lab."""
