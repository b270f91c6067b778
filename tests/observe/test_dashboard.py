"""deploy/grafana-dashboard.json queries only metrics the mesh exports (docs/observability.md)."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_dashboard_uses_documented_metrics() -> None:
    dashboard = json.loads((ROOT / "deploy/grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {
        re.sub(r"_(bucket|sum|count)$", "", m)
        for e in exprs
        for m in re.findall(r"agent_mesh_[a-z_]+", e)
    }
    documented = set(
        re.findall(r"`(agent_mesh_[a-z_]+)`", (ROOT / "docs/observability.md").read_text())
    )
    assert used and used <= documented, used - documented
