"""The browser suite's machinery: a relay served for real (gunicorn, on a free port, with the session's sandbox as
Paywalls) and the distribution's headless Chromium driven by Selenium, plus the checks every console page gets
(axe-core accessibility, no admin key in the page or its URL).

Not a conftest.py: a second conftest module would shadow tests/conftest.py for every `from conftest import ...`.
The test modules import the fixtures from here by name.
"""

import base64
import hashlib
import json
import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

import leakcheck
from conftest import PG_URL, base_settings, gunicorn_relay, needs_postgres, postgres_database, sqlite_url
from relay import migrate, tokens

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
HERE = Path(__file__).parent
AXE = HERE / "vendor" / "axe.min.js"
AXE_SHA256 = "29348999450cdf2849a8e70b7912fc2da85a849da39c0d0d5394f51d4a9ed95c"  # axe-core 4.14.1 (vendor/README.md)
ARTIFACTS = HERE.parent.parent / "test-artifacts"  # gitignored: screenshots for people, not for assertions


@dataclass
class Relay:
    url: str
    admin_key: str
    database_url: str
    log_path: Path


@pytest.fixture(scope="module",
                params=["sqlite", pytest.param("postgres", marks=[needs_postgres, pytest.mark.postgres])])
def relay(request, sandbox_server, tmp_path_factory):
    """A relay under gunicorn (the production server, two workers: sign-in and CSRF must hold across processes) on
    a fresh database, with the console on."""
    folder = tmp_path_factory.mktemp("relay")
    admin_key = "admin-" + uuid.uuid4().hex
    leakcheck.add_secret(admin_key)
    log_path = folder / "gunicorn.log"

    def serve(database_url):
        migrate.upgrade(database_url)
        settings = base_settings(database_url, sandbox_server.url, RELAY_ADMIN_KEY=admin_key)
        # Booting two workers while the rest of the suite loads the machine can take a while: a minute, not 20 s.
        with gunicorn_relay(settings, workers=2, threads=4, log_path=log_path, boot_seconds=60) as (url, _process):
            yield Relay(url, admin_key, database_url, log_path)
        assert admin_key not in log_path.read_text(errors="replace"), "the admin key reached the relay's log"

    if request.param == "sqlite":
        yield from serve(sqlite_url(folder))
    else:
        assert PG_URL
        with postgres_database() as url:
            yield from serve(url)


@pytest.fixture(scope="session")
def chromium(tmp_path_factory):
    """Headless Chromium from the distribution's packages, driven through its own chromedriver (Selenium Manager
    never downloads anything: both paths are given)."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: install them with `apt-get install -y chromium chromium-driver` "
                    "(.ci/run does this on a fresh machine)")
    downloads = tmp_path_factory.mktemp("downloads")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1280,1000", "--lang=en-US", "--no-first-run", "--disable-extensions"):
        options.add_argument(argument)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = None
    for attempt in range(3):
        # On a loaded machine Chromium can miss chromedriver's start-up deadline: start again, never leaving the
        # driver process of a failed attempt behind.
        service = Service(executable_path=CHROMEDRIVER,
                          log_output=str(downloads.parent / f"chromedriver-{attempt}.log"))
        try:
            driver = webdriver.Chrome(options=options, service=service)
            break
        except WebDriverException:
            service.stop()
            if attempt == 2:
                raise
    driver.set_page_load_timeout(30)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.downloads = downloads
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def browser(chromium, relay):
    """The browser, signed out, with an empty downloads folder, pointed at this module's relay."""
    chromium.delete_all_cookies()
    chromium.get("about:blank")
    for path in chromium.downloads.iterdir():
        path.unlink()
    chromium.relay = relay
    return chromium


# --- what every page gets ----------------------------------------------------------------------------------------

def visit(driver, path: str):
    driver.get(driver.relay.url + path)
    check_page(driver)


# The console pages that show a token once, by design (as leakcheck.SHOWS_TOKEN_ONCE for the admin API).
SHOWS_TOKEN_ONCE = re.compile(r"/console/tokens/(new|[^/]+/rotate)")


def check_page(driver):
    """The admin key is never in a page or its URL (issue 17), whatever page the browser is on; and every page goes
    to the session's leak scan (tests/leakcheck.py), which knows the token secrets shown_once() reports."""
    url, page = driver.current_url, driver.page_source
    assert driver.relay.admin_key not in url
    assert driver.relay.admin_key not in page
    if not SHOWS_TOKEN_ONCE.search(url):
        leakcheck.record(f"browser page {url}", url + "\n" + page)


def shown_once(token: str) -> str:
    """A token the console showed once: from now on no page, answer or log line of the session may hold it."""
    parts = tokens.split(token)
    assert parts, f"not a relay token: {token[:8]}..."
    leakcheck.add_secret(parts[1])  # the secret part, as leakcheck knows the tokens minted in this process
    return token


def axe_violations(driver, impacts=("serious", "critical")) -> list[dict]:
    """Run the vendored axe-core in the page (injected through WebDriver: the console's CSP allows no inline
    script, and the relay never serves axe) and return the violations of these impacts."""
    source = AXE.read_bytes()
    assert hashlib.sha256(source).hexdigest() == AXE_SHA256, "tests/browser/vendor/axe.min.js is not axe-core 4.14.1"
    driver.execute_script(source.decode())
    driver.set_script_timeout(60)
    result = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']})"
        ".then(r => done(JSON.stringify(r.violations)), e => done(JSON.stringify({error: String(e)})));")
    violations = json.loads(result)
    assert not isinstance(violations, dict), violations
    return [violation for violation in violations if violation["impact"] in impacts]


def describe(violations: list[dict]) -> str:
    return "\n".join(f"{v['impact']} {v['id']}: {v['help']} -> "
                     + "; ".join(node["target"][0] if node["target"] else "?" for node in v["nodes"][:5])
                     for v in violations)


def screenshot(driver, name: str) -> Path:
    """The whole page, not just the window (the ledger and a token's page are taller), as test-artifacts/<name>.png."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    width = driver.execute_script("return document.documentElement.clientWidth")
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": min(int(height), 4000), "deviceScaleFactor": 1, "mobile": False})
    try:
        path.write_bytes(base64.b64decode(driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})["data"]))
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    return path


def wait_for_element(driver, by, value, seconds: float = 10.0):
    """Wait for an element to appear (an observable fact, never a guessed pause) and return it."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            found = driver.find_elements(by, value)
            if found:
                return found[0]
        except WebDriverException:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"no element {by}={value!r} on {driver.current_url}")
        time.sleep(0.05)


def wait_for_download(driver, suffix: str, seconds: float = 20.0) -> Path:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done = [path for path in driver.downloads.iterdir() if path.name.endswith(suffix)]
        partial = [path for path in driver.downloads.iterdir() if path.name.endswith(".crdownload")]
        if done and not partial:
            return done[0]
        time.sleep(0.05)
    raise AssertionError(f"no {suffix} download in {seconds:g} s: {sorted(p.name for p in driver.downloads.iterdir())}")


def navigate(driver, element):
    """Click a link or submit button and wait until the next page has replaced this one: a click returns before
    the navigation it starts has finished, and a check run meanwhile would read the old page."""
    old = driver.find_element(By.TAG_NAME, "html")
    element.click()
    WebDriverWait(driver, 20, poll_frequency=0.05).until(lambda _: gone(old))
    WebDriverWait(driver, 20, poll_frequency=0.05).until(
        lambda d: d.execute_script("return document.readyState") == "complete")
    check_page(driver)


# ChromeDriver sometimes answers a call on an element of a page just replaced with this inspector error instead of
# "stale element reference" (SeleniumHQ/selenium#15401), so Selenium's own staleness_of raised it now and then.
REPLACED_DOCUMENT = "Node with given id does not belong to the document"


def gone(element) -> bool:
    """Whether the element's page has been replaced: stale, in either of the two ways ChromeDriver says so."""
    try:
        element.is_enabled()
    except StaleElementReferenceException:
        return True
    except WebDriverException as error:
        if REPLACED_DOCUMENT in str(error.msg):
            return True
        raise
    return False
