#!/usr/bin/env python3
"""Checks deploy/grafana/kiln-dashboard.json and deploy/prometheus/kiln-alerts.yaml against
what the binaries really expose (scripts/check-observability.sh runs it):

    check-observability.py RULES_OUT SCRAPE...   SCRAPE: a file holding a /metrics answer

- every panel has at least one query; every query becomes a recording rule in RULES_OUT,
  which the caller hands to `promtool check rules` (so each is parsed as PromQL, with
  Grafana's $__rate_interval and $team variables substituted);
- every metric name a dashboard query or an alert rule uses is in the scraped answers of a
  running kiln-api and kiln-worker (histograms by their _bucket/_sum/_count series).
Exits non-zero with one line per problem.
"""
import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy/grafana/kiln-dashboard.json"
RULES = ROOT / "deploy/prometheus/kiln-alerts.yaml"
NAME = re.compile(r"\b(kiln_[a-z0-9_]+)\b")


def exposed_names(texts):
    names = set()
    for text in texts:
        for line in text.splitlines():
            if line and not line.startswith("#"):
                names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    rules_out, scrapes = sys.argv[1], sys.argv[2:]
    exposed = exposed_names(Path(s).read_text() for s in scrapes)
    problems = []
    if not any(n.startswith("kiln_worker_") for n in exposed):
        problems.append("no kiln_worker_* series in the scrapes: was the worker's /metrics scraped?")
    dashboard = json.loads(DASHBOARD.read_text())
    records = []
    used = {}
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        targets = panel.get("targets") or []
        if not targets:
            problems.append(f"dashboard panel {panel['title']!r} has no query")
        for t in targets:
            expr = t["expr"].replace("$__rate_interval", "5m").replace("$team", ".*")
            if "$" in expr:
                problems.append(f"dashboard panel {panel['title']!r}: unknown variable in {t['expr']}")
            records.append({"record": f"kiln_dashboard:panel_{panel['id']}_{t['refId']}", "expr": expr})
            for name in NAME.findall(t["expr"]):
                used.setdefault(name, f"dashboard panel {panel['title']!r}")
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            for name in NAME.findall(rule["expr"]):
                used.setdefault(name, f"alert {rule['alert']}")
    for name, where in sorted(used.items()):
        if name not in exposed:
            problems.append(f"{where} uses {name}, which no scraped /metrics exposes")
    Path(rules_out).write_text(yaml.safe_dump({"groups": [{"name": "kiln-dashboard", "rules": records}]}))
    for p in problems:
        print(f"check-observability: {p}", file=sys.stderr)
    if not problems:
        print(f"observability: {len(records)} dashboard queries and the alert rules use "
              f"{len(used)} metric names, all exposed by the running binaries")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
