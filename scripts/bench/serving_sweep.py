"""The serving sweep of scripts/bench-serving.sh: the same wrk load (one instance per request,
the same bytes) against each server at each concurrency, in one run; prints Markdown tables
with requests/s, p50 and p99 and the ratios against the baselines.

    serving_sweep.py --body body.json --token T --seconds 10 --connections 1,8,32,128 \
        --target 'Kiln=http://...' --target 'Flask + gunicorn=http://...' ...

The first target is the one the ratios are for; `--baseline LABEL` names the targets it is
compared with (each gets a ratio column). Standard library only.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile


def parse_ms(value):
    match = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", value)
    if not match:
        return float("nan")
    number, unit = float(match.group(1)), match.group(2)
    return number * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def wrk(wrk_bin, threads, connections, seconds, script, url):
    out = subprocess.run(
        [wrk_bin, f"-t{min(threads, connections)}", f"-c{connections}", f"-d{seconds}s",
         "--latency", "-s", script, url],
        capture_output=True, text=True, check=True,
    ).stdout
    result = {"rps": 0.0, "p50": float("nan"), "p99": float("nan"), "requests": 0, "non_2xx": 0,
              "errors": 0}
    for line in out.splitlines():
        words = line.split()
        if words[:1] == ["50%"]:
            result["p50"] = parse_ms(words[1])
        elif words[:1] == ["99%"]:
            result["p99"] = parse_ms(words[1])
        elif words[:1] == ["Requests/sec:"]:
            result["rps"] = float(words[1])
        elif line.strip().startswith("Non-2xx or 3xx responses:"):
            result["non_2xx"] = int(words[-1])
        elif len(words) > 2 and words[1] == "requests" and words[2] == "in":
            result["requests"] = int(words[0])
        elif line.strip().startswith("Socket errors:"):
            result["errors"] = sum(int(n) for n in re.findall(r"\d+", line))
    return result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--body", required=True)
    parser.add_argument("--token", default="")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--connections", default="1,8,32,128")
    parser.add_argument("--target", action="append", required=True, help="LABEL=URL")
    parser.add_argument("--baseline", action="append", default=[], help="a LABEL to compare with")
    parser.add_argument("--title", default="")
    parser.add_argument("--json", help="also write the raw results here")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure every target this many times per concurrency, each round "
                             "starting at the next target (no target always goes first); the "
                             "table shows each one's median round")
    args = parser.parse_args()
    wrk_bin = os.environ.get("KILN_WRK", "wrk")
    body = json.dumps(json.load(open(args.body)), separators=(",", ":"))
    targets = [t.split("=", 1) for t in args.target]
    connections = [int(c) for c in args.connections.split(",")]

    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        escaped = body.replace("\\", "\\\\").replace("'", "\\'")
        script.write(
            f"wrk.method = \"POST\"\nwrk.body = '{escaped}'\n"
            "wrk.headers[\"Content-Type\"] = \"application/json\"\n"
            f"wrk.headers[\"Authorization\"] = \"Bearer {args.token}\"\n"
        )
    rounds = {}
    for c in connections:
        for k in range(max(1, args.rounds)):
            for label, url in targets[k % len(targets):] + targets[:k % len(targets)]:
                if args.warmup > 0:
                    wrk(wrk_bin, args.threads, c, args.warmup, script.name, url)
                r = wrk(wrk_bin, args.threads, c, args.seconds, script.name, url)
                rounds.setdefault((label, c), []).append(r)
                print(f"c={c} round {k + 1} {label}: {r}", file=sys.stderr, flush=True)
    # Each target's median round by requests/s (its own p50 and p99 with it).
    results = {key: sorted(rs, key=lambda r: r["rps"])[len(rs) // 2] for key, rs in rounds.items()}
    os.unlink(script.name)

    first = targets[0][0]
    if args.title:
        print(f"\n{args.title}\n")
    head = "| connections | server | requests/s | p50 | p99 | non-2xx |"
    rule = "|---:|---|---:|---:|---:|---:|"
    for b in args.baseline:
        head += f" {first} vs {b} (req/s) | {first} p99 / {b} p99 |"
        rule += "---:|---:|"
    print(head)
    print(rule)
    for c in connections:
        for label, _ in targets:
            r = results[(label, c)]
            line = (f"| {c} | {label} | {r['rps']:,.0f} | {r['p50']:.2f} ms | {r['p99']:.2f} ms | "
                    f"{r['non_2xx'] + r['errors']} of {r['requests']} |")
            for b in args.baseline:
                if label == first:
                    base = results[(b, c)]
                    line += f" {r['rps'] / base['rps']:.1f}× | {r['p99'] / base['p99']:.2f} |"
                else:
                    line += " | |"
            print(line)
    if args.json:
        with open(args.json, "w") as out:
            json.dump([{"server": l, "connections": c, **r} for (l, c), r in results.items()], out,
                      indent=1)


if __name__ == "__main__":
    main()
