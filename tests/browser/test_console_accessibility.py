"""Every console page passes axe-core (vendored, run in the same headless Chromium) with no serious or critical
violation (issue 17), signed out and signed in, with real data on the page: a token, credits, a replay and a call
whose outcome is unknown. The overview, token detail and ledger pages are saved as screenshots under
test-artifacts/."""

import re
import uuid

import pytest
import requests
from selenium.webdriver.common.by import By

from chromium import (axe_violations, browser, check_page, chromium, describe, relay, screenshot,  # noqa: F401
                      visit)
from test_console_browser import admin_token, deposit, sign_in


@pytest.fixture(scope="module")
def data(relay, sandbox_server):
    """What the pages show: a capped token with credits and a replay, and a deposit left ambiguous."""
    token_id, token = admin_token(relay, daily_cap="100", monthly_cap="1000", operations=["deposit", "ledger"])
    reference = "in_" + uuid.uuid4().hex[:8]
    for n in range(3):
        assert deposit(relay.url, token, f"acme:a11y_{n}", "5", reference).status_code == 200
    assert deposit(relay.url, token, "acme:a11y_0", "5", reference).status_code == 200  # replayed
    state = sandbox_server.state
    with state.lock:
        # Paywalls applies it and answers 200 with a body the relay cannot read: it may have applied, so ambiguous.
        state.faults.append({"kind": "respond", "status": 200, "body": "{}", "apply": True, "count": 1,
                             "endpoint": "deposit", "headers": {"Content-Type": "application/json"}})
    try:
        stranded = deposit(relay.url, token, "acme:a11y_stranded", "2", reference)
    finally:
        with state.lock:
            state.faults.clear()
    assert stranded.status_code == 502, stranded.text
    return {"token_id": token_id, "reference": reference}


def ledger_row(driver) -> str:
    """The path of the newest row of the ledger page on screen."""
    link = driver.find_element(By.CSS_SELECTOR, "table.ledger tbody th[scope=row] a")
    return re.sub(r"^https?://[^/]+", "", link.get_attribute("href"))


PAGES = {
    "overview": "/console/",
    "tokens": "/console/tokens",
    "audit": "/console/audit",
    "ledger": "/console/ledger?ref={reference}",
    "ledger-errors": "/console/ledger?from=not-a-date&outcome=stolen",
    "ledger-row": None,  # found from the ledger page
    "ledger-ambiguous": "/console/ledger/ambiguous",
}
SCREENSHOTS = {"overview", "ledger"}


def test_the_sign_in_page_passes_axe(browser):
    visit(browser, "/console/sign-in")
    assert not (found := axe_violations(browser)), describe(found)
    sign_in(browser, key="wrong")  # with its error shown
    assert browser.find_elements(By.ID, "admin_key-error")
    assert not (found := axe_violations(browser)), describe(found)


@pytest.mark.parametrize("page", list(PAGES))
def test_each_console_page_passes_axe(browser, data, page):
    sign_in(browser)
    if page == "ledger-row":
        visit(browser, PAGES["ledger"].format(**data))
        visit(browser, ledger_row(browser))
        assert browser.find_element(By.ID, "field-idempotency_key")
    else:
        visit(browser, PAGES[page].format(**data))
    assert browser.find_element(By.TAG_NAME, "h1").text
    found = axe_violations(browser)
    assert not found, f"{page}:\n{describe(found)}"
    if page in SCREENSHOTS:
        assert screenshot(browser, f"console-{page}").stat().st_size > 10_000
    check_page(browser)
    assert requests  # noqa: the data fixture used it


def test_the_check_can_fail_on_a_console_page(browser):
    """The same check, on a console page with an image without alt text and an unlabelled field put in: both are
    found, so a page passing above is a page axe really ran on."""
    sign_in(browser)
    visit(browser, "/console/ledger")
    browser.execute_script("const img = document.createElement('img'); img.src = 'x.png';"
                           "const input = document.createElement('input'); input.type = 'text';"
                           "document.querySelector('main').append(img, input);")
    assert {violation["id"] for violation in axe_violations(browser)} >= {"image-alt", "label"}
