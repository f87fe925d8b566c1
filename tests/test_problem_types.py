"""One closed list of problem types: what the relay can send == schemas/problem.json's enum == the client catalogue
(schemas/problems.json), so every client has a message for every problem."""

import ast
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PREFIX = "urn:paywalls-relay:problem:"


def sent_by_the_relay() -> set[str]:
    """Every name a Problem(...) in relay/ is built with. A name that is not a literal would escape this list."""
    names = set()
    for path in (ROOT / "relay").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and "Problem" in (getattr(node.func, "id", None), getattr(node.func, "attr", None)):
                name = node.args[1] if len(node.args) > 1 else None
                assert isinstance(name, ast.Constant) and isinstance(name.value, str), f"{path.name}:{node.lineno}"
                names.add(name.value)
    return names


def published() -> set[str]:
    enum = json.loads((ROOT / "schemas" / "problem.json").read_text(encoding="utf-8"))["properties"]["type"]["enum"]
    assert all(item.startswith(PREFIX) for item in enum) and len(enum) == len(set(enum))
    return {item.removeprefix(PREFIX) for item in enum}


def test_the_enum_is_what_the_relay_can_send():
    assert sent_by_the_relay() == published()


def test_every_urn_the_relay_writes_is_built_by_messages_problem():
    for path in (ROOT / "relay").glob("*.py"):
        if path.name != "messages.py":
            assert PREFIX not in path.read_text(encoding="utf-8"), path.name


def test_the_client_catalogue_names_exactly_the_relay_types_and_every_limit():
    catalogue_path = ROOT / "schemas" / "problems.json"
    assert catalogue_path.is_file(), "schemas/problems.json (the client catalogue) is missing"
    catalogue = json.loads(catalogue_path.read_text(encoding="utf-8"))
    problems = {name: entry for name, entry in catalogue["problems"].items() if name != "$comment"}
    assert {name for name, entry in problems.items() if entry.get("source") == "relay"} == published()
    problem_schema = json.loads((ROOT / "schemas" / "problem.json").read_text(encoding="utf-8"))
    assert set(problems["forbidden"]["limits"]) == set(problem_schema["properties"]["limit"]["enum"])
    for name in published():
        assert problems[name].get("message"), name


def test_a_problem_answer_validates_against_the_enum(client):
    from jsonschema import Draft202012Validator
    schema = json.loads((ROOT / "schemas" / "problem.json").read_text(encoding="utf-8"))
    answer = client.post("/v1/user/balance/deposit", json={"user": "u", "amount": "1"})
    Draft202012Validator(schema).validate(answer.get_json())
    unknown = {**answer.get_json(), "type": PREFIX + "something-new"}
    assert not Draft202012Validator(schema).is_valid(unknown)


def test_any_other_web_layer_error_is_one_of_the_listed_types(make_app):
    """A body cut off mid-way (werkzeug's ClientDisconnected, a 400) or any other HTTPException reaches the generic
    handler, which must still answer with a listed type."""
    from flask import abort
    from werkzeug.exceptions import ClientDisconnected

    app = make_app()

    def disconnected():
        raise ClientDisconnected()

    app.add_url_rule("/_test/disconnected", "disconnected", disconnected)
    app.add_url_rule("/_test/not-implemented", "not_implemented", lambda: abort(501))
    client = app.test_client()
    cut = client.get("/_test/disconnected")
    assert (cut.status_code, cut.get_json()["type"]) == (400, PREFIX + "malformed-body")
    odd = client.get("/_test/not-implemented")
    assert (odd.status_code, odd.get_json()["type"]) == (501, PREFIX + "internal")
