"""The web UI in a real headless Chromium through WebDriver (scripts/check-ui.sh runs it).

Against a running Kiln with a worker, as a user would: sign in with a token, watch a job
train live (its chart gains points while it runs), cancel it, compare two runs, promote a
model version, change a deployment's traffic split, sign out; another team's job URL is a
404 page; the admin page. Screenshots of the main pages (1280 px and phone width) go to
$KILN_UI_ARTIFACTS and are checked non-blank (pixel variance). Every check is on what the
page shows and on what the API then answers.
"""

import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid

from PIL import Image, ImageStat
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

API = os.environ["KILN_API_URL"].rstrip("/")
TOKEN = os.environ["KILN_TOKEN"]
ADMIN = os.environ["KILN_ADMIN_TOKEN"]
ART = os.environ["KILN_UI_ARTIFACTS"]
checks = 0


def ok(cond, what):
    global checks
    if not cond:
        raise AssertionError(what)
    checks += 1


def api(method, path, token, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(API + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as res:
            raw = res.read()
            return res.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def browser(width=1280, height=900):
    opts = webdriver.ChromeOptions()
    opts.binary_location = os.environ["KILN_CHROMIUM"]
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}", "--disable-extensions"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(os.environ["KILN_CHROMEDRIVER"]), options=opts)


def wait(cond, what, timeout=90, every=0.25):
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = cond()
            if value:
                return value
        except Exception:  # the page may be mid-navigation
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)


def sign_in(d, token):
    d.get(API + "/ui/sign-in")
    d.find_element(By.ID, "token").send_keys(token)
    d.find_element(By.ID, "sign-in").click()
    wait(lambda: "/ui/sign-in" not in d.current_url, "sign-in to finish")
    ok(d.find_element(By.ID, "sign-out"), "signed in: a sign-out button")
    ok(token not in d.page_source and token not in d.current_url, "the token is in no page or URL")


def sign_out(d):
    if not d.find_elements(By.ID, "sign-out"):  # error pages have no header form
        d.get(API + "/ui")
    d.find_element(By.ID, "sign-out").click()
    wait(lambda: "/ui/sign-in" in d.current_url, "sign-out to land on the sign-in page")
    d.get(API + "/ui/jobs")
    ok("/ui/sign-in" in d.current_url, "after signing out, a page asks to sign in again")


def shot(d, name):
    path = os.path.join(ART, f"{name}.png")
    d.save_screenshot(path)
    img = Image.open(path).convert("RGB")
    spread = ImageStat.Stat(img.convert("L")).stddev[0]
    colours = len(img.getcolors(maxcolors=1 << 20) or [])
    ok(spread > 8 and colours > 16, f"screenshot {name} is not blank (stddev {spread:.1f}, {colours} colours)")


def scroll_to(d, el):
    d.execute_script("arguments[0].scrollIntoView({block: 'center'})", el)


def points(d, chart_id):
    return int(d.find_element(By.ID, chart_id).get_attribute("data-points") or "0")


def main():
    status, datasets = api("GET", "/v1/datasets?name=iris", TOKEN)
    ok(status == 200 and datasets["items"], "the quickstart uploaded iris")
    dataset = os.environ.get("DATASET_ID") or datasets["items"][0]["id"]
    status, jobs = api("GET", "/v1/jobs?state=succeeded", TOKEN)
    earlier = os.environ.get("JOB_ID") or jobs["items"][0]["id"]
    # A long job, so it is still training while the page watches (cancelled below).
    status, job = api("POST", "/v1/jobs", TOKEN, {
        "dataset_id": dataset, "task": "classification", "target": "species",
        "model": {"type": "mlp", "hidden": [32]},
        "hyperparameters": {"epochs": 20000, "batch_size": 8, "checkpoint_every_epochs": 1000}})
    ok(status == 201, f"submitted a long job: {status} {job}")
    job_id = job["id"]

    d = browser()
    try:
        sign_in(d, TOKEN)
        ok(d.current_url.endswith("/ui/jobs"), f"the start page is the jobs list: {d.current_url}")
        wait(lambda: d.find_element(By.CSS_SELECTOR, f"tr[data-job='{job_id}']"), "the new job in the list")
        shot(d, "jobs")

        # The job trains live: its loss chart gains points while the page is open.
        d.get(f"{API}/ui/jobs/{job_id}")
        wait(lambda: d.find_element(By.ID, "job-summary").get_attribute("data-state") == "running",
             "the job to start running (is a worker up?)", timeout=180)
        chart = d.find_element(By.ID, "chart-loss")
        scroll_to(d, chart)
        first = wait(lambda: points(d, "chart-loss"), "the chart's first points")
        state = d.find_element(By.ID, "job-summary").get_attribute("data-state")
        ok(state == "running", f"still running at {first} points: {state}")
        later = wait(lambda: points(d, "chart-loss") > first and points(d, "chart-loss"),
                     "the chart to gain points while the job runs")
        ok(later > first, f"the live chart grew from {first} to {later} points")
        ok(d.find_element(By.CSS_SELECTOR, "#chart-loss canvas"), "uPlot drew the chart")
        logs = d.find_element(By.ID, "logs")
        wait(lambda: logs.text.strip(), "log lines in the tail")
        shot(d, "job-running")
        # Cancel through the page's form (a member's button).
        d.find_element(By.ID, "cancel").click()
        wait(lambda: d.find_element(By.ID, "job-summary").get_attribute("data-state") == "cancelled",
             "the job to end cancelled", timeout=120)
        ok(api("GET", f"/v1/jobs/{job_id}", TOKEN)[1]["state"] == "cancelled", "the API says cancelled")
        shot(d, "job-cancelled")
        # Zoom: dragging across the chart re-fetches that step range; double-click resets.
        d.get(f"{API}/ui/jobs/{job_id}")
        chart = d.find_element(By.ID, "chart-loss")
        scroll_to(d, chart)
        wait(lambda: chart.get_attribute("data-loaded") == "1", "the loss chart to load")
        whole = points(d, "chart-loss")
        over = chart.find_element(By.CSS_SELECTOR, ".u-over")
        w = over.size["width"]
        ActionChains(d).move_to_element_with_offset(over, int(-w * 0.3), 0).click_and_hold() \
            .move_by_offset(int(w * 0.2), 0).release().perform()
        wait(lambda: "Zoomed" in chart.find_element(By.CLASS_NAME, "chart-status").text, "the zoomed re-fetch")
        zoomed = points(d, "chart-loss")
        ok(0 < zoomed < whole, f"the zoomed range holds fewer points ({zoomed} of {whole})")
        over = chart.find_element(By.CSS_SELECTOR, ".u-over")  # the plot was redrawn
        ActionChains(d).double_click(over).perform()
        wait(lambda: points(d, "chart-loss") == whole, "double-click to reset the zoom")
        # Wall time on the x-axis.
        Select(d.find_element(By.ID, "x-axis")).select_by_value("time")
        wait(lambda: d.execute_script("return document.getElementById('chart-loss')._chart.data.x") == "time",
             "the chart re-fetched with wall time")
        ok(d.execute_script("return document.getElementById('chart-loss')._chart.data.series[0].seconds.length") > 0,
           "wall times for every point")

        # Compare two runs: the quickstart's job and this one.
        d.get(f"{API}/ui/runs")
        shot(d, "runs")
        for rid in (earlier, job_id):
            box = d.find_element(By.CSS_SELECTOR, f"input[name='id'][value='{rid}']")
            scroll_to(d, box)
            box.click()
        d.find_element(By.ID, "compare").click()
        wait(lambda: "Compare 2 runs" in d.find_element(By.TAG_NAME, "h1").text, "the compare view")
        ok(d.find_elements(By.CSS_SELECTOR, "#diff tr.differs"), "the diff table lists differences")
        ok(d.find_elements(By.CSS_SELECTOR, "svg.parallel polyline"), "the parallel-coordinates plot")
        chart = d.find_element(By.CSS_SELECTOR, ".chart[data-src]")
        scroll_to(d, chart)
        wait(lambda: chart.get_attribute("data-loaded") == "1", "a compare chart to load")
        ok(points(d, chart.get_attribute("id")) > 0, "the overlaid chart has points")
        d.execute_script("window.scrollTo(0, 0)")
        shot(d, "compare")

        # Promote a version that production does not point at.
        status, model = api("GET", "/v1/models/iris", TOKEN)
        current = model["aliases"]["production"]
        status, versions = api("GET", "/v1/models/iris/versions", TOKEN)
        numbers = [v["version"] for v in versions["items"]]
        target = next(v for v in numbers if v != current)
        d.get(f"{API}/ui/models/iris")
        button = d.find_element(By.ID, f"promote-{target}")
        scroll_to(d, button)
        button.click()
        wait(lambda: f"now points at v{target}" in d.page_source, "the promotion's notice")
        ok(api("GET", "/v1/models/iris", TOKEN)[1]["aliases"]["production"] == target,
           f"production → v{target} in the API")
        ok(d.find_elements(By.CSS_SELECTOR, "#alias-history tbody tr"), "the alias history from the audit log")
        shot(d, "model")

        # Change the deployment's traffic split, then follow the alias again.
        d.get(f"{API}/ui/deployments/iris")
        split = d.find_element(By.ID, "split")
        split.clear()
        split.send_keys(f"{target}=80 {current}=20")
        d.find_element(By.ID, "set-traffic").click()
        wait(lambda: f"v{target} 80%" in d.find_element(By.ID, "traffic").text, "the new split on the page", timeout=120)
        traffic = api("GET", "/v1/deployments/iris", TOKEN)[1]["traffic"]
        ok({(t["version"], t["weight"]) for t in traffic} == {(target, 80), (current, 20)}, f"the API's split: {traffic}")
        shot(d, "deployment")
        split = d.find_element(By.ID, "split")
        split.clear()
        d.find_element(By.ID, "set-traffic").click()
        wait(lambda: "Traffic is now" in d.page_source, "the split cleared")

        # A small study: its page plots each trial's objective and lists the trials.
        status, study = api("POST", "/v1/studies", TOKEN, {
            "name": "ui-check", "base": {"dataset_id": dataset, "task": "classification", "target": "species",
                                         "model": {"type": "mlp", "hidden": [8]},
                                         "hyperparameters": {"epochs": 5, "batch_size": 16}},
            "parameters": {"hyperparameters.learning_rate": {"type": "float", "min": 0.005, "max": 0.1, "log": True}},
            "objective": {"metric": "val_accuracy"}, "max_trials": 2})
        ok(status == 201, f"a study is created ({status})")
        wait(lambda: api("GET", f"/v1/studies/{study['id']}", TOKEN)[1]["state"] != "running", "the study to end",
             timeout=300)
        d.get(f"{API}/ui/studies")
        ok("ui-check" in d.page_source, "the studies list shows it")
        d.get(f"{API}/ui/studies/{study['id']}")
        ok(len(d.find_elements(By.CSS_SELECTOR, "svg.objective circle")) == 2, "the objective of both trials is plotted")
        ok(len(d.find_elements(By.CSS_SELECTOR, "#trials tbody tr")) == 2, "both trials are listed")
        ok(d.find_elements(By.CSS_SELECTOR, "svg.parallel polyline"), "the study's parallel coordinates")
        shot(d, "study")

        for page in ("datasets", "models", "deployments"):
            d.get(f"{API}/ui/{page}")
            shot(d, page)
        d.get(f"{API}/ui/datasets/{dataset}")
        ok("Jobs that used this version" in d.page_source, "the dataset page lists its jobs")
        shot(d, "dataset")
        # Phone width: the pages still lay out (no horizontal page scroll but the tables').
        d.set_window_size(390, 844)
        d.get(f"{API}/ui/jobs")
        width = d.execute_script("return document.documentElement.scrollWidth")
        ok(width <= 400, f"the jobs page fits a phone's width ({width}px)")
        shot(d, "jobs-phone")
        d.set_window_size(1280, 900)
        sign_out(d)

        # Another team's job URL is a 404 page there too.
        name = "ui-check-" + uuid.uuid4().hex[:8]
        status, team = api("POST", "/v1/teams", ADMIN, {"name": name})
        ok(status == 201, f"created team {name}")
        status, other = api("POST", f"/v1/teams/{team['id']}/tokens", ADMIN, {"name": "ui", "role": "maintainer"})
        sign_in(d, other["token"])
        d.get(f"{API}/ui/jobs/{earlier}")
        ok(d.find_element(By.TAG_NAME, "h1").text == "Not found", "another team's job is not found")
        ok("another team" in d.page_source, "the 404 page says what to do next")
        cookie = d.get_cookie("kiln_ui_session")
        ok(cookie and cookie.get("httpOnly") and cookie.get("sameSite") == "Strict", f"the session cookie: {cookie}")
        req = urllib.request.Request(f"{API}/ui/jobs/{earlier}", headers={"Cookie": f"kiln_ui_session={cookie['value']}"})
        try:
            urllib.request.urlopen(req, timeout=30)
            ok(False, "another team's job answered 2xx")
        except urllib.error.HTTPError as e:
            ok(e.code == 404, f"another team's job answers {e.code}")
        shot(d, "not-found")
        sign_out(d)

        # The platform page, with the admin token.
        sign_in(d, ADMIN)
        ok(d.current_url.endswith("/ui/admin"), "an admin starts on the platform page")
        ok(d.find_elements(By.CSS_SELECTOR, "#workers tbody tr"), "workers are listed")
        ok(d.find_elements(By.CSS_SELECTOR, "#queue tbody tr"), "queue depth by team")
        shot(d, "admin")
        sign_out(d)
    finally:
        d.quit()
    print(f"ui: {checks} browser checks passed; screenshots in {ART}")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"ui check failed: {e}", file=sys.stderr)
        sys.exit(1)
