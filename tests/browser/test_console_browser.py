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

from chromium import (browser, check_page, chromium, relay, screenshot, visit, wait_for_download,  # noqa: F401
                      wait_for_element)
from relay import ledger

pytestmark = []


# --- what an operator does, as steps --------------------------------------------------------------------------------

def sign_in(driver, key=None):
    visit(driver, "/console/sign-in")
    field = driver.find_element(By.ID, "admin_key")
    field.clear()
    field.send_keys(key if key is not None else driver.relay.admin_key)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    check_page(driver)


def sign_out(driver):
    driver.find_element(By.CSS_SELECTOR, "form.sign-out button").click()
    check_page(driver)


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
    return answer.json()["id"], answer.json()["token"]


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
    browser.find_element(By.CSS_SELECTOR, "form.search button[type=submit]").click()
    check_page(browser)
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
