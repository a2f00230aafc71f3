"""The emulated censored network: userland, loopback only, no root (see docs/architecture.md).

Probes never import this package; tests and the demo start a ``Lab`` and point unmodified probes at it.
It sits above every other layer: the only package allowed to import the agent and the collector
(tests/test_layers.py enforces it). The demo needs neither in-process: it runs both as the programs an
installation provides (:mod:`.scripts`), the way a volunteer and an operator would.
"""

from .lab import Lab
from .networks import NETWORKS, LabNetwork
from .scenario import DomainSpec, Scenario, ScenarioError, load_scenario

__all__ = ["NETWORKS", "DomainSpec", "Lab", "LabNetwork", "Scenario", "ScenarioError", "load_scenario"]
