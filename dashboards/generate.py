"""Write gatewatch's Grafana dashboards (``dashboards/*.json``) from their definitions.

The dashboards are generated so that their queries stay consistent with each other and with the metric
names (a test compares the committed JSON with this script's output and checks every metric name a query
uses against the code). Each dashboard is defined in a module beside this script (``dashboard_*.py``),
on Grafana's model in ``grafana_model.py``. Edit those, then run::

    python dashboards/generate.py           # rewrite the JSON files beside this script
    python dashboards/generate.py --check   # exit 1 if a committed file is out of date

Every panel queries the Prometheus data source chosen in the ``datasource`` variable. ``panel_queries()``
lists every panel query with the dashboard variables filled in, so that a test can evaluate each one
through a real Prometheus.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Run as a script, this folder is already sys.path[0]; loaded by path (as the tests load it), it is not.
# The modules beside this one have names of their own (grafana_model, dashboard_*), shadowing nothing.
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from dashboard_collector_health import HEALTH  # noqa: E402
from dashboard_country import COUNTRY  # noqa: E402
from dashboard_overview import OVERVIEW  # noqa: E402
from grafana_model import BUILTIN_VARIABLES, Dashboard, build, expand, render  # noqa: E402

__all__ = [
    "DASHBOARDS",
    "BUILTIN_VARIABLES",
    "PanelQuery",
    "build",
    "expand",
    "main",
    "panel_queries",
    "render",
    "variable_queries",
]

DASHBOARDS: Mapping[str, Dashboard] = {
    "overview.json": OVERVIEW,
    "country.json": COUNTRY,
    "collector-health.json": HEALTH,
}


# -- queries, for tests -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str  # uid
    panel: str  # title
    ref_id: str
    expr: str  # with variables filled in
    template: str  # as written in the dashboard
    instant: bool


def panel_queries(variables: Mapping[str, str] | None = None) -> list[PanelQuery]:
    """Every panel query of every dashboard. With ``variables`` (e.g. ``{"cc": "XL", "asn": ".*"}``) the
    expressions are filled in; without, only queries that use no dashboard variable are expandable, so
    the others keep their template text in ``expr``."""
    out = []
    for dashboard in DASHBOARDS.values():
        for panel in dashboard.panels:
            for index, target in enumerate(panel.targets):
                try:
                    expr = expand(target.expr, variables or {})
                except KeyError:
                    if variables is not None:
                        raise
                    expr = target.expr
                out.append(
                    PanelQuery(
                        dashboard.uid, panel.title, chr(ord("A") + index), expr, target.expr, target.instant
                    )
                )
    return out


def variable_queries() -> list[tuple[str, str, str]]:
    """(dashboard uid, variable name, label_values query) for every query variable."""
    return [(d.uid, v.name, v.query) for d in DASHBOARDS.values() for v in d.variables]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a committed dashboard is out of date")
    parser.add_argument(
        "--out", type=Path, default=HERE, help="directory to write to (default: beside this file)"
    )
    args = parser.parse_args(argv)
    stale = []
    for name, dashboard in DASHBOARDS.items():
        path = args.out / name
        text = render(dashboard)
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        print(f"out of date (run python dashboards/generate.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
