"""Where the agent keeps its state: one data directory holding the key, consent, queue and settings.

The directory defaults to the platform's per-user data folder (``~/.local/share/gatewatch`` on Linux)
and can be moved with ``--data-dir`` (or, under systemd, ``$STATE_DIRECTORY``), so that several agents
or a test can live side by side.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DataPaths", "default_data_dir"]

APP_NAME = "gatewatch"


def default_data_dir() -> Path:
    # systemd's StateDirectory= exports this; honouring it lets a DynamicUser unit work without flags.
    state = os.environ.get("STATE_DIRECTORY")
    if state:
        return Path(state.split(":")[0])
    # Imported here: with --data-dir or under systemd it is never needed (memory, issue 4).
    from platformdirs import user_data_dir

    return Path(user_data_dir(APP_NAME, appauthor=False))


@dataclass(frozen=True)
class DataPaths:
    root: Path

    @classmethod
    def at(cls, root: Path | str | None = None) -> DataPaths:
        return cls(Path(root) if root is not None else default_data_dir())

    @property
    def key(self) -> Path:
        return self.root / "signing-key.pem"

    @property
    def consent(self) -> Path:
        return self.root / "consent.json"

    @property
    def queue(self) -> Path:
        return self.root / "queue.sqlite3"

    @property
    def settings(self) -> Path:
        return self.root / "agent.toml"

    @property
    def pseudonym_secret(self) -> Path:
        """The optional network pseudonym's secret (agent/pseudonym.py): never sent."""
        return self.root / "pseudonym-secret"

    @property
    def test_list_copy(self) -> Path:
        """The last test list fetched from the collector: the daemon's fallback when it cannot fetch."""
        return self.root / "last-test-list.csv"

    def create(self) -> None:
        """Create the directory readable by its owner only (it holds the private key)."""
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
