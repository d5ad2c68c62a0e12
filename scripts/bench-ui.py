"""The web UI's benchmark (scripts/bench-ui.sh; docs/benchmarks.md "Web UI").

1. Chart data: a tracked run with 1,000,000 points in 4 series and one with 1,000 points in
   4 series; `GET /ui/runs/{id}/series.json` for all four series, timed by the client on
   127.0.0.1 (median of repeated requests) and its bytes.
2. Compare view: 100 runs of 4 series × 200 points; `/ui/compare?id=…` (100 ids) in headless
   Chromium, time to content from the Performance timing API: `responseEnd` and
   `domContentLoadedEventEnd` of the navigation, and the `performance.now()` at which every
   chart in the first viewport has drawn.
"""

import json
import math
import os
import statistics
import time
import urllib.parse
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

API = os.environ["KILN_API_URL"].rstrip("/")
TOKEN = os.environ["KILN_TOKEN"]
REPEAT = int(os.environ.get("KILN_BENCH_UI_REPEAT", "15"))
NAMES = ["train_loss", "val_loss", "val_accuracy", "lr"]


def api(method, path, body=None):
    req = urllib.request.Request(API + path, data=json.dumps(body).encode() if body is not None else None, method=method)
    req.add_header("Authorization", f"Bearer {TOKEN}")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=300) as res:
        raw = res.read()
        return json.loads(raw) if raw else None


def make_run(name, per_series, params=None):
    run = api("POST", "/v1/runs", {"name": name, "params": params or {}})
    batch = []
    for n in NAMES:
        for s in range(per_series):
            batch.append({"name": n, "step": s, "value": math.sin(s / 997.0) + (s % 13) / 50.0})
            if len(batch) == 10_000:
                api("POST", f"/v1/runs/{run['id']}/metrics", {"points": batch})
                batch = []
    if batch:
        api("POST", f"/v1/runs/{run['id']}/metrics", {"points": batch})
    return run["id"]


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def session_cookie():
    opener = urllib.request.build_opener(NoRedirect)
    with opener.open(API + "/ui/sign-in") as res:
        nonce = [c.split(";")[0].split("=", 1)[1] for c in res.headers.get_all("Set-Cookie") if c.startswith("kiln_ui_sign_in=")][0]
    body = urllib.parse.urlencode({"token": TOKEN, "csrf": nonce}).encode()
    req = urllib.request.Request(API + "/ui/sign-in", data=body, method="POST", headers={"Cookie": f"kiln_ui_sign_in={nonce}"})
    try:
        opener.open(req)
    except urllib.error.HTTPError as e:
        for c in e.headers.get_all("Set-Cookie"):
            if c.startswith("kiln_ui_session="):
                return c.split(";")[0]
    raise SystemExit("could not sign in")


def timed(url, cookie):
    times, size = [], 0
    for _ in range(REPEAT):
        req = urllib.request.Request(url, headers={"Cookie": cookie})
        t0 = time.perf_counter()
        with urllib.request.urlopen(req, timeout=120) as res:
            body = res.read()
        times.append(time.perf_counter() - t0)
        size = len(body)
    data = json.loads(body)
    points = sum(len(s["steps"]) for s in data["series"])
    return statistics.median(times), size, points


def main():
    stamp = str(int(time.time()))
    print("creating runs (1,000,000 points take a while to ingest)...", flush=True)
    small = make_run(f"bench-ui-small-{stamp}", 250)
    big = make_run(f"bench-ui-big-{stamp}", 250_000)
    cookie = session_cookie()
    names = ",".join(NAMES)
    t_small, b_small, p_small = timed(f"{API}/ui/runs/{small}/series.json?names={names}", cookie)
    t_big, b_big, p_big = timed(f"{API}/ui/runs/{big}/series.json?names={names}", cookie)
    print(f"chart data, 1,000 points in 4 series:     {t_small * 1000:8.1f} ms  {b_small / 1000:7.1f} kB  {p_small} points sent")
    print(f"chart data, 1,000,000 points in 4 series: {t_big * 1000:8.1f} ms  {b_big / 1000:7.1f} kB  {p_big} points sent")
    print(f"ratio: {t_big / t_small:.2f}x the small run's time (target <= 2x); {b_big / 1000:.1f} kB (target <= 200 kB)")
    zoom = f"{API}/ui/runs/{big}/series.json?names={names}&x_min=100000&x_max=100999"
    t_zoom, b_zoom, p_zoom = timed(zoom, cookie)
    print(f"zoomed to 1,000 steps of the big run:     {t_zoom * 1000:8.1f} ms  {b_zoom / 1000:7.1f} kB  {p_zoom} points sent")

    ids = [make_run(f"bench-ui-cmp-{stamp}-{i}", 200, {"lr": 0.001 * (i + 1), "hidden": 16 + i % 4 * 16}) for i in range(100)]
    opts = webdriver.ChromeOptions()
    opts.binary_location = os.environ["KILN_CHROMIUM"]
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"):
        opts.add_argument(arg)
    d = webdriver.Chrome(service=Service(os.environ["KILN_CHROMEDRIVER"]), options=opts)
    try:
        d.get(API + "/ui/sign-in")
        d.add_cookie({"name": "kiln_ui_session", "value": cookie.split("=", 1)[1], "path": "/ui"})
        url = f"{API}/ui/compare?" + "&".join(f"id={i}" for i in ids)
        results = []
        for _ in range(3):
            d.get(url)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                done = d.execute_script(
                    "var vis = Array.from(document.querySelectorAll('.chart[data-src]')).filter(function (c) {"
                    " var r = c.getBoundingClientRect(); return r.top < innerHeight && r.bottom > 0; });"
                    "return vis.length > 0 && vis.every(function (c) { return c.dataset.loaded === '1'; }) ? performance.now() : null;")
                if done is not None:
                    break
                d.execute_script("var c = document.querySelector('.chart[data-src]'); if (c) c.scrollIntoView();")
                time.sleep(0.05)
            nav = d.execute_script("var n = performance.getEntriesByType('navigation')[0]; return [n.responseEnd, n.domContentLoadedEventEnd, n.transferSize];")
            results.append((nav[0], nav[1], done, nav[2]))
        best = min(results, key=lambda r: r[2] or 1e9)
        print(f"compare 100 runs in Chromium: HTML by {best[0]:.0f} ms ({best[3] / 1000:.0f} kB), "
              f"DOMContentLoaded {best[1]:.0f} ms, first charts drawn {best[2]:.0f} ms (best of 3)")
    finally:
        d.quit()


if __name__ == "__main__":
    main()
