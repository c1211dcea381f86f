"""Fixtures for the browser tests: Debian's Chromium driven by Playwright, one JupyterLab server.

* ``chromium``: /usr/bin/chromium, installed with apt-get when missing (as root; never
  ``playwright install``, which downloads a browser build of its own);
* ``lab``: one ``jupyter lab`` for the whole session, in a temporary copy of the course
  (its course-local exchange included), with a random token;
* ``page``: a headless Chromium page with a new, empty user-data-dir, logged in to that Lab.

Screenshots go to $COURSE_SCREENSHOTS (default: the session's temporary folder).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from autograder.course import Course

REPO = Path(__file__).resolve().parent.parent.parent

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
BIN = Path(sys.executable).parent


def _install_chromium() -> None:
    if CHROMIUM.exists() or os.geteuid() != 0 or not shutil.which("apt-get"):
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"]
    if subprocess.run(install, env=env, capture_output=True, timeout=1200).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600)
        subprocess.run(install, env=env, capture_output=True, timeout=1200)


@pytest.fixture(scope="session")
def chromium() -> Path:
    _install_chromium()
    if not CHROMIUM.exists():
        if os.geteuid() == 0:
            pytest.fail("/usr/bin/chromium is missing and `apt-get install chromium` failed")
        pytest.skip("Chromium is not installed (apt-get install chromium, as root)")
    return CHROMIUM


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get("COURSE_SCREENSHOTS") or tmp_path_factory.mktemp("screens"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Lab:
    course: Course
    url: str
    token: str
    env: dict

    def run(self, *command: str, check: bool = True, timeout: int = 600, cwd: Path | None = None) -> subprocess.CompletedProcess:
        """A command in the course directory (the TA's or the student's terminal), or in ``cwd``."""
        done = subprocess.run(list(command), cwd=cwd or self.course.root, env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        if check:
            assert done.returncode == 0, f"{' '.join(command)}: {done.stdout[-2000:]} {done.stderr[-2000:]}"
        return done


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("lab")
    course = Course.open(REPO).copy_to(root / "course")
    token = secrets.token_hex(16)
    port = _free_port()
    home = root / "home"
    home.mkdir()
    # Jupyter's own folders in the temporary home, so the TA's settings are neither used nor touched.
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "HOME": str(home),
           "JUPYTER_CONFIG_DIR": str(home / ".jupyter"), "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"), "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
           "PYTHONUNBUFFERED": "1"}
    command = [str(BIN / "jupyter"), "lab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
               f"--ServerApp.token={token}", f"--ServerApp.root_dir={course.root}",
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
               "--LabApp.news_url=", "--ServerApp.shutdown_no_activity_timeout=0"]
    if os.geteuid() == 0:
        command.append("--allow-root")
    log = (root / "lab.log").open("w")
    server = subprocess.Popen(command, cwd=course.root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5):
                break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"JupyterLab did not start: {(root / 'lab.log').read_text()[-3000:]}")
            time.sleep(0.5)
    try:
        yield Lab(course, url, token, env)
    finally:
        os.killpg(server.pid, 15)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)
            server.wait()
        log.close()


@pytest.fixture(scope="session")
def browser_context(chromium: Path, lab: Lab, tmp_path_factory: pytest.TempPathFactory):
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")  # a new, empty user-data-dir
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 900},
        )
        context.set_default_timeout(60_000)
        page = context.new_page()
        page.goto(f"{lab.url}/lab?token={lab.token}")  # the token becomes a login cookie
        page.locator("#jp-main-dock-panel").wait_for()
        page.close()
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser_context):
    page = browser_context.new_page()
    try:
        yield page
    finally:
        page.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """A screenshot of the page a failing browser test left, beside the others."""
    report = yield
    if report.when == "call" and report.failed and "page" in item.funcargs:
        folder = item.funcargs.get("screenshots")
        if folder is not None:
            try:
                item.funcargs["page"].screenshot(path=str(folder / f"FAILED-{item.name}.png"))
            except Exception:  # noqa: BLE001 - a screenshot must not hide the failure itself
                pass
    return report
