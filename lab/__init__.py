"""The emulated censored network: userland, loopback only, no root (see docs/architecture.md).

Probes never import this package; tests and the demo start a ``Lab`` and point unmodified probes at it.
"""

from .lab import Lab
from .networks import NETWORKS, LabNetwork
from .scenario import DomainSpec, Scenario, ScenarioError, load_scenario

__all__ = ["NETWORKS", "DomainSpec", "Lab", "LabNetwork", "Scenario", "ScenarioError", "load_scenario"]
