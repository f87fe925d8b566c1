"""The operator console in a real headless Chromium (issue 17): sign in, create a capped token, use it with a real
deposit through the relay and see the usage bar and the ledger row, rotate (the old token gets 401), revoke, export
CSV and check its rows, a CSRF-less POST refused, logout. The relay runs under gunicorn with two workers on a free
port, with the test session's sandbox as Paywalls; every page visited is checked for the admin key."""

import csv
import io
import json
import uuid

import requests
from selenium.webdriver.common.by import By

from chromium import (browser, check_page, chromium, navigate, relay, screenshot, shown_once, visit,  # noqa: F401
                      wait_for_download, wait_for_element)
from relay import ledger

pytestmark = []


# --- what an operator does, as steps --------------------------------------------------------------------------------

def sign_in(driver, key=None):
    visit(driver, "/console/sign-in")
    field = driver.find_element(By.ID, "admin_key")
    field.clear()
    field.send_keys(key if key is not None else driver.relay.admin_key)
    navigate(driver, driver.find_element(By.CSS_SELECTOR, "form button[type=submit]"))


def sign_out(driver):
    navigate(driver, driver.find_element(By.CSS_SELECTOR, "form.sign-out button"))


def heading(driver) -> str:
    return driver.find_element(By.TAG_NAME, "h1").text


def deposit(relay_url: str, token: str, user: str, amount: str, reference: str) -> requests.Response:
    return requests.post(relay_url + "/v1/user/balance/deposit", timeout=15,
                         headers={"Authorization": f"Bearer {token}"},
                         json={"user": user, "amount": amount, "metadata": {"reference": reference}})


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


# --- sign-in and logout ---------------------------------------------------------------------------------------------

def test_sign_in_with_the_admin_key_and_logout_ends_the_session(browser):
    visit(browser, "/console/tokens")
    assert browser.current_url.startswith(browser.relay.url + "/console/sign-in"), "a page must ask for sign-in"
    sign_in(browser, key="not-the-admin-key")
    assert "not the admin key" in browser.find_element(By.ID, "admin_key-error").text
    sign_in(browser)
    assert browser.current_url == browser.relay.url + "/console/", browser.current_url
    cookie = browser.get_cookie("relay_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/console"
    assert browser.relay.admin_key not in cookie["value"]
    sign_out(browser)
    assert heading(browser) == "Sign in"
    # The cookie of the ended session, put back, opens nothing: logout ended it on the server.
    browser.add_cookie({"name": "relay_console", "value": cookie["value"], "path": "/console"})
    visit(browser, "/console/tokens")
    assert heading(browser) == "Sign in"


# --- the ledger ------------------------------------------------------------------------------------------------------

def admin_token(relay, **spec) -> tuple[str, str]:
    """(id, token) of a token made through the admin API, as a script would."""
    spec.setdefault("label", unique("Zap"))
    spec.setdefault("operations", ["deposit"])
    answer = requests.post(relay.url + "/v1/admin/tokens", json=spec, timeout=15,
                           headers={"Authorization": f"Bearer {relay.admin_key}"})
    assert answer.status_code == 201, answer.text
    return answer.json()["id"], shown_once(answer.json()["token"])


def test_export_csv_of_a_search_downloads_its_rows(browser):
    token_id, token = admin_token(browser.relay)
    batch = unique("in")
    made = [("acme:export_1", "3"), ("-acme:export_2", "4.5"), ("acme:export_3", "6")]
    for user, amount in made:
        assert deposit(browser.relay.url, token, user, amount, batch).status_code == 200
    assert deposit(browser.relay.url, token, "acme:export_1", "3", batch).status_code == 200  # a replay
    assert deposit(browser.relay.url, token, "acme:other", "1", unique("in")).status_code == 200
    sign_in(browser)
    visit(browser, "/console/ledger")
    browser.find_element(By.ID, "ref").send_keys(batch)
    browser.find_element(By.CSS_SELECTOR, f"#token option[value='{token_id}']").click()
    browser.find_element(By.CSS_SELECTOR, "input[name=outcome][value=credited]").click()
    navigate(browser, browser.find_element(By.CSS_SELECTOR, "form.search button[type=submit]"))
    shown = [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "table.ledger tbody td:nth-child(5)")]
    assert shown == [user for user, _ in reversed(made)]  # newest first, the replay and the other user filtered out
    browser.find_element(By.LINK_TEXT, "CSV").click()
    path = wait_for_download(browser, ".csv")
    table = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"), newline="")))
    assert list(table[0]) == ledger.EXPORT_COLUMNS
    assert [(row["user"], row["amount"], row["outcome"], row["token_id"]) for row in table] == [
        ("acme:export_1", "3", "credited", token_id), ("'-acme:export_2", "4.5", "credited", token_id),
        ("acme:export_3", "6", "credited", token_id)]  # oldest first; a cell starting with - is made text
    assert all(json.loads(row["metadata"]) == {"reference": batch} for row in table)


# --- tokens: create with caps, use, rotate, revoke -------------------------------------------------------------------

def create_in_console(driver, label: str, daily_cap: str, monthly_cap: str) -> str:
    """Create a deposit token through the form; returns the token shown once."""
    visit(driver, "/console/tokens")
    navigate(driver, driver.find_element(By.LINK_TEXT, "Create a token"))
    driver.find_element(By.ID, "label").send_keys(label)
    deposit_box = driver.find_element(By.ID, "op-deposit")
    if not deposit_box.is_selected():
        deposit_box.click()
    driver.find_element(By.ID, "daily_cap").send_keys(daily_cap)
    driver.find_element(By.ID, "monthly_cap").send_keys(monthly_cap)
    navigate(driver, driver.find_element(By.CSS_SELECTOR, "form.form button[type=submit]"))
    assert heading(driver) == "Token created", driver.find_element(By.TAG_NAME, "main").text
    return shown_once(driver.find_element(By.ID, "token-text").text.strip())


def confirm(driver, action: str):
    """An action on the token page, through its confirmation step."""
    navigate(driver, driver.find_element(By.LINK_TEXT, action.capitalize()))
    assert heading(driver).startswith(action.capitalize()), heading(driver)
    navigate(driver, driver.find_element(By.CSS_SELECTOR, "main form button[type=submit]"))


def test_a_capped_token_made_in_the_console_credits_and_shows_in_usage_and_ledger(browser):
    relay = browser.relay
    sign_in(browser)
    label = "Zap: HubSpot signup bonus"
    token = create_in_console(browser, label, daily_cap="100", monthly_cap="1000")
    # The next step for Zapier and n8n, with this relay's URL; the copy button is there (shown by console.js).
    steps = browser.find_element(By.CSS_SELECTOR, "ul.steps").text
    assert "Zapier" in steps and "n8n" in steps and relay.url in steps
    assert browser.find_element(By.CSS_SELECTOR, "button[data-copy=token-text]").is_displayed()

    reference = unique("in")
    answer = deposit(relay.url, token, "acme:browser_1", "25", reference)
    assert answer.status_code == 200, answer.text
    over = deposit(relay.url, token, "acme:browser_2", "80", unique("in"))  # 25 + 80 > the daily cap of 100
    assert over.status_code == 403, over.text

    navigate(browser, browser.find_element(By.LINK_TEXT, "Go to the token"))
    assert heading(browser) == label
    assert token not in browser.page_source  # shown once, never again
    today = browser.find_element(By.CSS_SELECTOR, "svg.bar[aria-label*='used today']").get_attribute("aria-label")
    month = browser.find_element(By.CSS_SELECTOR, "svg.bar[aria-label*='used this month']").get_attribute("aria-label")
    assert today.startswith("25") and "of 100" in today and "(25%)" in today, today
    assert month.startswith("25") and "of 1000" in month, month
    fill = browser.find_element(By.CSS_SELECTOR, "svg.bar[aria-label*='used today'] rect.bar-fill")
    assert float(fill.get_attribute("width")) == 50.0  # a quarter of the 200-wide bar
    screenshot(browser, "console-token-detail")

    navigate(browser, browser.find_element(By.LINK_TEXT, "Ledger rows of this token"))
    rows = browser.find_elements(By.CSS_SELECTOR, "table.ledger tbody tr")
    cells = [[cell.text for cell in row.find_elements(By.CSS_SELECTOR, "th, td")] for row in rows]
    assert len(cells) == 1, cells  # the refused deposit never reached Paywalls: no row for it
    assert cells[0][3:8] == ["deposit", "acme:browser_1", "25", "credited", reference]
    navigate(browser, rows[0].find_element(By.CSS_SELECTOR, "th a"))
    assert browser.find_element(By.ID, "field-user").text == "acme:browser_1"
    assert browser.find_element(By.ID, "field-outcome").text == "credited"
    assert reference in browser.find_element(By.ID, "field-metadata").text
    assert browser.find_element(By.ID, "field-balance_formatted").text.strip()


def test_rotate_gives_a_new_secret_once_and_the_old_token_gets_401(browser):
    relay = browser.relay
    token_id, old = admin_token(relay)
    assert deposit(relay.url, old, "acme:rotate", "1", unique("in")).status_code == 200
    sign_in(browser)
    visit(browser, f"/console/tokens/{token_id}")
    confirm(browser, "rotate")
    new = shown_once(browser.find_element(By.ID, "token-text").text.strip())
    assert new and new != old
    refused = deposit(relay.url, old, "acme:rotate", "2", unique("in"))
    assert refused.status_code == 401, refused.text
    assert deposit(relay.url, new, "acme:rotate", "2", unique("in")).status_code == 200
    visit(browser, f"/console/tokens/{token_id}")
    assert new not in browser.page_source


def test_revoke_after_confirmation_and_the_token_gets_401(browser):
    relay = browser.relay
    token_id, token = admin_token(relay)
    sign_in(browser)
    visit(browser, f"/console/tokens/{token_id}/revoke")
    navigate(browser, browser.find_element(By.LINK_TEXT, "Cancel"))  # the confirmation step: cancel changes nothing
    assert deposit(relay.url, token, "acme:revoke", "1", unique("in")).status_code == 200
    confirm(browser, "revoke")
    assert browser.find_element(By.CSS_SELECTOR, ".status").text == "revoked"
    refused = deposit(relay.url, token, "acme:revoke", "2", unique("in"))
    assert refused.status_code == 401, refused.text


# --- CSRF --------------------------------------------------------------------------------------------------------------

def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(browser):
    relay = browser.relay
    token_id, token = admin_token(relay)
    sign_in(browser)
    visit(browser, f"/console/tokens/{token_id}")
    # The signed-in browser itself sends the POST (its session cookie goes along), only without the form's token.
    status = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch(arguments[0], {method: 'POST', body: new URLSearchParams({once: 'x'}), credentials: 'same-origin',"
        " redirect: 'manual'}).then(r => done(r.status), e => done(String(e)));",
        f"/console/tokens/{token_id}/revoke")
    assert status == 400
    # A real form submission with a forged token: the page says why, with a 400.
    browser.execute_script(
        "const form = document.createElement('form'); form.method = 'post'; form.action = arguments[0];"
        "const field = document.createElement('input'); field.type = 'hidden'; field.name = 'csrf_token';"
        "field.value = 'forged'; form.append(field); document.body.append(form); form.submit();",
        f"/console/tokens/{token_id}/revoke")
    wait_for_element(browser, By.XPATH, "//h1[contains(., 'expired')]")
    check_page(browser)
    assert deposit(relay.url, token, "acme:csrf", "1", unique("in")).status_code == 200  # still active
    visit(browser, f"/console/tokens/{token_id}")
    assert browser.find_element(By.CSS_SELECTOR, ".status").text == "active"
