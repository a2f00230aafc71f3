"""The schedule baseline of bench/time_to_alert.py (pure: no process, no socket).

How soon the daemon's schedule alone can see a block: from a random moment, the time until the first
slice of any agent that holds one of the blocked URLs. Each agent's slices come every interval / slices
plus up to jitter / slices at random, at a phase of its own; a URL falls in one slice by a hash salted per
agent (uniform), so an agent first reaches a blocked URL at the nearest slice, counting from its next one,
that holds any of them. Drawn many times with a fixed seed; nothing here is measured.
"""

from __future__ import annotations

import random
import statistics

from gatewatch.agent.settings import DaemonSettings

__all__ = ["DAEMON", "first_sighting", "schedule_baseline"]

DAEMON = DaemonSettings()  # the agent's defaults, read from the agent itself


def first_sighting(
    rng: random.Random, *, interval: float, jitter: float, slices: int, blocked: int, agents: int
) -> float:
    """One draw of the seconds from a random moment to the first slice (of any of ``agents``) holding one
    of ``blocked`` URLs."""
    best = float("inf")
    for _ in range(agents):
        gap = interval / slices + rng.uniform(0, jitter / slices)
        ahead = min(rng.randrange(slices) for _ in range(blocked)) if blocked else slices
        at = rng.uniform(0, gap)  # the next slice: the moment is uniform within the current gap
        for _ in range(ahead):
            at += interval / slices + rng.uniform(0, jitter / slices)
        best = min(best, at)
    return best


def schedule_baseline(slices: int, blocked: int, agents: int, draws: int = 20_000, seed: int = 1) -> float:
    """The median minutes to the first sighting on the daemon's default interval and jitter."""
    rng = random.Random(seed)
    samples = [
        first_sighting(
            rng, interval=DAEMON.interval, jitter=DAEMON.jitter, slices=slices, blocked=blocked, agents=agents
        )
        for _ in range(draws)
    ]
    return statistics.median(samples) / 60
