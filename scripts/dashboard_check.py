#!/usr/bin/env python3
"""Checks the jobmanager's web dashboard in headless Chromium, driven by Selenium.

    dashboard_check.py BASE_URL JOB_ID SCREENSHOT_DIR [--timeout SECONDS]

BASE_URL is the jobmanager's REST URL (the dashboard is its `/`); JOB_ID a running job with
checkpointing whose source is backpressured (the slow-sink test job, tests/tests/dashboard.rs).
The check, as a user would see it:

1. the overview lists the job as RUNNING, with the cluster's taskmanagers (overview.png);
2. the job's page (reached by its link) draws the job graph: the source vertex, in front of the
   slow stage, is shown as backpressured (data-backpressure-level="high"), and an edge carries a
   rate of records/s above 0 (job-graph.png);
3. its checkpoints tab lists at least 2 completed checkpoints and charts them (checkpoints.png);
4. the cancel button, once its confirmation is accepted, cancels the job: its status on the page
   becomes CANCELED (canceled.png).

Exits 0 when every step passed; otherwise 1 with one line saying what was not seen, the page's
notice and the browser's console (and failure.png). Uses Debian's chromium and chromedriver
(`apt-get install chromium chromium-driver`, done by scripts/setup.sh) found on PATH, never
Selenium Manager's downloads.
"""

import argparse
import base64
import os
import shutil
import sys
import tempfile
import time

# Selenium Manager must not try to download a browser or a driver: both are given.
os.environ.setdefault("SE_OFFLINE", "true")

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import (  # noqa: E402
    NoSuchElementException,
    StaleElementReferenceException,
    TimeoutException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


class CheckFailed(Exception):
    """A step did not see what it expects."""


def executable(name, fallback):
    found = shutil.which(name) or (fallback if os.access(fallback, os.X_OK) else None)
    if not found:
        raise CheckFailed(f"{name} not found (install Debian's chromium and chromium-driver: ./scripts/setup.sh)")
    return found


def start_browser(profile_dir):
    options = webdriver.ChromeOptions()
    options.binary_location = executable("chromium", "/usr/bin/chromium")
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--no-first-run",
        "--window-size=1440,1000",
        f"--user-data-dir={profile_dir}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=executable("chromedriver", "/usr/bin/chromedriver"))
    return webdriver.Chrome(service=service, options=options)


# The page is drawn again every 2 s, so an element found a moment ago may be gone: the check reads
# what it needs in one script run (a snapshot of plain values), and clicks retry on a stale element.
SNAPSHOT = """
const all = (css) => [...document.querySelectorAll(css)];
return {
  jobRows: all('#jobs-table tr[data-job-id]').map((r) => ({id: r.dataset.jobId, status: r.dataset.status})),
  taskmanagerRows: all('#taskmanagers-table tr[data-taskmanager-id]').length,
  taskmanagerCount: document.querySelector('#count-taskmanagers .card-value')?.textContent ?? null,
  jobPage: document.querySelector('#job-page')?.dataset.jobId ?? null,
  jobStatus: document.querySelector('#job-status')?.textContent.trim() ?? null,
  cancelDisabled: document.querySelector('button[data-action="cancel"]')?.disabled ?? null,
  vertices: all('#job-graph g.vertex').map((v) => ({
    id: v.dataset.vertexId, name: v.dataset.vertexName, level: v.dataset.backpressureLevel,
    busy: Number(v.dataset.busyRatio), backpressured: Number(v.dataset.backpressuredRatio),
    fill: v.querySelector('rect.vertex-box')?.getAttribute('fill'),
  })),
  edges: all('#job-graph g.edge').map((e) => ({
    source: e.dataset.edgeSource, target: e.dataset.edgeTarget,
    rate: e.dataset.recordsPerSecond === undefined ? null : Number(e.dataset.recordsPerSecond),
    label: e.querySelector('text.edge-label')?.textContent ?? '',
  })),
  checkpoints: all('#checkpoint-history tr[data-checkpoint-id]').map((r) => ({id: r.dataset.checkpointId, status: r.dataset.checkpointStatus})),
  completedCount: document.querySelector('#checkpoint-counts [data-count="completed"] .card-value')?.textContent ?? null,
  charts: all('.charts .chart').map((c) => {
    const canvas = c.querySelector('canvas');
    return {name: c.dataset.chart, points: Number(c.dataset.points), width: canvas?.width ?? 0, height: canvas?.height ?? 0,
            drawn: !!(canvas && window.Chart && Chart.getChart(canvas))};
  }),
  notice: document.querySelector('#notice:not([hidden]) .notice-text')?.textContent ?? null,
};
"""


class Check:
    def __init__(self, driver, base_url, job, screenshots, timeout):
        self.driver = driver
        self.base_url = base_url.rstrip("/")
        self.job = job
        self.screenshots = screenshots
        self.timeout = timeout
        self.started = time.monotonic()

    def step(self, message):
        print(f"[{time.monotonic() - self.started:5.1f}s] {message}", flush=True)

    def page(self):
        """What the page shows now (see SNAPSHOT)."""
        return self.driver.execute_script(SNAPSHOT)

    def wait_for(self, what, condition, timeout=None):
        """Polls `condition(page)` on snapshots of the page until it returns something truthy;
        returns that. On timeout, fails naming `what` and the last snapshot's relevant part."""
        timeout = timeout or self.timeout
        deadline = time.monotonic() + timeout
        while True:
            page = self.page()
            found = condition(page)
            if found:
                return found
            if time.monotonic() > deadline:
                raise CheckFailed(f"{what}: not seen within {timeout:.0f} s")
            time.sleep(0.25)

    def click(self, css):
        """Clicks the element at `css`, again if the page was redrawn under the click."""
        for _ in range(10):
            try:
                self.driver.find_element(By.CSS_SELECTOR, css).click()
                return
            except (StaleElementReferenceException, NoSuchElementException):
                time.sleep(0.2)
        raise CheckFailed(f"could not click {css}")

    def screenshot(self, name, full_page=False):
        """Saves the window, or with `full_page` the whole page (through the DevTools protocol)."""
        path = os.path.join(self.screenshots, name)
        if full_page:
            content = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
            clip = {"x": 0, "y": 0, "width": content["width"], "height": min(content["height"], 6000), "scale": 1}
            shot = self.driver.execute_cdp_cmd(
                "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
            )
            with open(path, "wb") as file:
                file.write(base64.b64decode(shot["data"]))
        elif not self.driver.save_screenshot(path):
            raise CheckFailed(f"could not save the screenshot {path}")
        self.step(f"screenshot {path}")

    def overview(self):
        self.driver.get(f"{self.base_url}/#/")

        def job_row(page):
            return next((row for row in page["jobRows"] if row["id"] == self.job), None)

        row = self.wait_for(f"the job {self.job} in the overview's jobs table", job_row)
        if row["status"] != "RUNNING":
            raise CheckFailed(f"the overview shows the job as {row['status']!r}, not RUNNING")
        page = self.page()
        count = page["taskmanagerCount"] or ""
        if page["taskmanagerRows"] < 1 or not count.isdigit() or int(count) < 1:
            raise CheckFailed(f"the overview lists {page['taskmanagerRows']} taskmanagers and counts {count!r}")
        self.step(f"overview: job RUNNING, {count} taskmanager(s)")
        self.screenshot("overview.png")
        self.click(f'#jobs-table tr[data-job-id="{self.job}"] a.job-link')

    def job_graph(self):
        self.wait_for("the job page", lambda page: page["jobPage"] == self.job)
        page = self.wait_for("the job graph with its edges", lambda page: page["edges"] and page["vertices"] and page)
        vertices = page["vertices"]
        if len(vertices) < 2:
            raise CheckFailed(f"the job graph shows {len(vertices)} vertex, expected the slow-sink job's stages")
        fed = {edge["target"] for edge in page["edges"]}
        sources = sorted(v["id"] for v in vertices if v["id"] not in fed)
        if not sources:
            raise CheckFailed(f"no vertex of the graph is a source (without inputs): {page['edges']}")
        self.step(f"job graph: {len(vertices)} vertices, {len(page['edges'])} edges, source vertex {', '.join(sources)}")

        def backpressured_source(page):
            return next((v for v in page["vertices"] if v["id"] in sources and v["level"] == "high"), None)

        try:
            source = self.wait_for("the source vertex shown as backpressured (high)", backpressured_source)
        except CheckFailed as failure:
            shown = {v["id"]: (v["level"], v["backpressured"]) for v in self.page()["vertices"]}
            raise CheckFailed(f"{failure}; levels and ratios shown: {shown}") from None
        if not (0.0 <= source["busy"] <= 1.0 and 0.5 < source["backpressured"] <= 1.0):
            raise CheckFailed(f"the backpressured source shows busy {source['busy']} and backpressured {source['backpressured']}")
        if not source["fill"]:
            raise CheckFailed("the backpressured source is drawn without a fill colour")
        self.step(
            f"vertex {source['id']} ({source['name']}): backpressure high ({source['backpressured']:.0%}), "
            f"busy {source['busy']:.0%}, drawn in {source['fill']}"
        )

        def flowing_edge(page):
            return next((e for e in page["edges"] if e["rate"] is not None and e["rate"] > 0), None)

        edge = self.wait_for("an edge labelled with a rate of records/s above 0", flowing_edge)
        self.step(f"edge {edge['source']} -> {edge['target']}: {edge['label']}")
        self.screenshot("job-graph.png")

    def checkpoints(self):
        self.click('.tabs a[data-tab="checkpoints"]')

        def two_completed(page):
            completed = [c["id"] for c in page["checkpoints"] if c["status"] == "COMPLETED"]
            return len(completed) >= 2 and page

        page = self.wait_for("at least 2 completed checkpoints in the history", two_completed)
        completed = [c["id"] for c in page["checkpoints"] if c["status"] == "COMPLETED"]
        count = page["completedCount"] or ""
        if not count.isdigit() or int(count) < len(completed):
            raise CheckFailed(f"the completed count shows {count!r} beside {len(completed)} completed rows")
        charts = {chart["name"]: chart for chart in page["charts"]}
        for name in ("durations", "sizes"):
            chart = charts.get(name)
            if chart is None or chart["points"] < 2 or not chart["drawn"] or chart["width"] == 0:
                raise CheckFailed(f"the {name} chart is missing, not drawn or has fewer than 2 points: {chart}")
        self.step(f"checkpoints: {count} completed (rows {', '.join(completed[:5])}), charts drawn")
        self.screenshot("checkpoints.png", full_page=True)

    def cancel(self):
        self.click('button[data-action="cancel"]')
        try:
            alert = WebDriverWait(self.driver, 10).until(expected_conditions.alert_is_present())
        except TimeoutException:
            raise CheckFailed("the cancel button asked for no confirmation") from None
        self.step(f"confirm: {alert.text!r}")
        alert.accept()
        page = self.wait_for("the job's status CANCELED on its page", lambda page: page["jobStatus"] == "CANCELED" and page)
        if not page["cancelDisabled"]:
            raise CheckFailed("the cancel button is still enabled on a CANCELED job")
        self.step("job CANCELED")
        self.screenshot("canceled.png")

    def console(self):
        """The browser console's errors since the last call."""
        try:
            entries = self.driver.get_log("browser")
        except WebDriverException:
            return []
        return [e for e in entries if e.get("level") == "SEVERE"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base_url", help="the jobmanager's REST URL, e.g. http://127.0.0.1:8081")
    parser.add_argument("job_id", help="a running, backpressured job with checkpointing")
    parser.add_argument("screenshot_dir", help="where the screenshots go (created if missing)")
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds each step may wait (default 90)")
    args = parser.parse_args()
    os.makedirs(args.screenshot_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="weir-chromium-") as profile:
        try:
            driver = start_browser(profile)
        except (CheckFailed, WebDriverException) as e:
            print(f"dashboard check failed: cannot start headless Chromium: {e}", file=sys.stderr)
            return 1
        check = Check(driver, args.base_url, args.job_id, args.screenshot_dir, args.timeout)
        try:
            check.overview()
            check.job_graph()
            check.checkpoints()
            check.cancel()
            # Uncaught errors, and the page's own reports of its failures (console.error).
            errors = [e for e in check.console() if e.get("source") in ("javascript", "console-api")]
            if errors:
                raise CheckFailed(f"the page's scripts failed: {[e.get('message') for e in errors]}")
            check.step("dashboard check passed")
            return 0
        except (CheckFailed, WebDriverException) as e:
            print(f"dashboard check failed: {e}", file=sys.stderr)
            print(f"  at {driver.current_url}", file=sys.stderr)
            try:
                notice = check.page()["notice"]
                if notice:
                    print(f"  notice on the page: {notice}", file=sys.stderr)
            except WebDriverException:
                pass
            for entry in check.console():
                print(f"  console: {entry.get('message')}", file=sys.stderr)
            try:
                driver.save_screenshot(os.path.join(args.screenshot_dir, "failure.png"))
                print(f"  screenshot: {os.path.join(args.screenshot_dir, 'failure.png')}", file=sys.stderr)
            except WebDriverException:
                pass
            return 1
        finally:
            driver.quit()


if __name__ == "__main__":
    sys.exit(main())
