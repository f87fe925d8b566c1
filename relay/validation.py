"""Request validation against schemas/ (JSON Schema 2020-12), with one error per failing field."""

import json
import math
import pathlib
import re
from decimal import Decimal
from functools import cache

from flask import request
from jsonschema import Draft202012Validator, ValidationError, validators
from referencing import Registry, Resource
from werkzeug.exceptions import RequestEntityTooLarge

from . import amounts, messages
from .messages import field_error

_HERE = pathlib.Path(__file__).resolve().parent
# Installed: relay/schemas (pyproject.toml maps it); in the repository: schemas/ beside relay/.
SCHEMAS_DIR = _HERE / "schemas" if (_HERE / "schemas").is_dir() else _HERE.parent / "schemas"
MAX_BODY_BYTES = 16 * 1024
MAX_METADATA_BYTES = 4 * 1024
MAX_DEPTH = 32  # objects and arrays inside one another; deeper bodies are refused before any recursion
SAFE_INTEGER = 2**53 - 1


@cache
def load_schema(name: str) -> dict:
    return json.loads((SCHEMAS_DIR / name).read_text(encoding="utf-8"))


@cache
def registry() -> Registry:
    resources = []
    for path in SCHEMAS_DIR.glob("*.json"):
        schema = load_schema(path.name)
        if "$id" in schema:
            resources.append((schema["$id"], Resource.from_contents(schema)))
    return Registry().with_resources(resources)


def whole_value(pattern: str) -> str:
    """`pattern` with ECMA-262's meaning of `$` (the very end) in Python's engine, where `$` also matches before a
    final newline: JSON Schema patterns are ECMA-262, so "acme:bob\n" must not pass `^[a-z:]+$` here either."""
    out, escaped, in_class = [], False, False
    for char in pattern:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "[":
            in_class = True
        elif char == "]":
            in_class = False
        elif char == "$" and not in_class:
            char = r"\Z"
        out.append(char)
    return "".join(out)


@cache
def compiled(pattern: str) -> re.Pattern:
    return re.compile(whole_value(pattern))


def _pattern(validator_, pattern, instance, schema):
    if validator_.is_type(instance, "string") and not compiled(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


Validator = validators.extend(Draft202012Validator, {"pattern": _pattern})


@cache
def validator(name: str) -> Draft202012Validator:
    """Compiled once per schema: building a validator per request is the expensive part. References
    to the other files are inlined first: the same rules, but jsonschema no longer looks a reference
    up on every validation (a third of the time per deposit body here)."""
    return Validator(_inlined(load_schema(name), name), registry=registry())


def _inlined(schema, file: str):
    """`schema` with each lone `$ref` to a file of schemas/ (or into `file` itself) replaced by its target."""
    if isinstance(schema, list):
        return [_inlined(item, file) for item in schema]
    if not isinstance(schema, dict):
        return schema
    ref = schema.get("$ref")
    if isinstance(ref, str) and len(schema) == 1:
        target_file, _, pointer = ref.partition("#")
        target_file = target_file or file
        if (SCHEMAS_DIR / target_file).is_file():
            target = load_schema(target_file)
            for part in filter(None, pointer.split("/")):
                target = target[part]
            return _inlined(target, target_file)
    return {key: _inlined(value, file) for key, value in schema.items()}


def _reject_duplicate_keys(pairs):
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise messages.malformed_body(f"The key '{key}' appears twice in one object.")
        obj[key] = value
    return obj


def _reject_constant(name: str):
    raise messages.malformed_body(f"{name} is not a JSON value.")


def _depth(value) -> int:
    """How deeply objects and arrays nest in `value`, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children)
    return deepest


def read_body(limit: int = MAX_BODY_BYTES) -> bytes:
    """The request body, at most `limit` bytes (MAX_BODY_BYTES; a bulk upload has its own), whatever its framing, or a 413 Problem.

    With a Content-Length, Werkzeug refuses an oversized body before reading it. Without one (chunked, or any
    body the server terminates), Werkzeug's guarded stream stops at the limit and hands over what it read, so a
    longer body would arrive cut at 16 KiB (400, or valid JSON padded with whitespace accepted). Here one byte
    past the limit is read from the server's own terminated stream, and its presence is the 413."""
    environ = request.environ
    if limit != MAX_BODY_BYTES:
        request.max_content_length = limit  # this request only (Flask 3.1); the app's limit stays for every other
    if request.content_length is not None or "wsgi.input_terminated" not in environ:
        try:
            return request.get_data(cache=True)
        except RequestEntityTooLarge:
            raise messages.body_too_large(limit) from None
    stream, chunks, size = environ["wsgi.input"], [], 0
    while size <= limit:
        chunk = stream.read(limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        raise messages.body_too_large(limit)
    return b"".join(chunks)


def parse_json_object(raw: bytes, content_type: str) -> dict:
    """The body as a dict with Decimal numbers, or a Problem saying why not."""
    if len(raw) > MAX_BODY_BYTES:
        raise messages.body_too_large(MAX_BODY_BYTES)
    if (content_type or "").split(";")[0].strip().lower() != "application/json":
        raise messages.unsupported_media_type(content_type)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise messages.malformed_body("The body is not valid UTF-8.") from None
    try:
        body = json.loads(text, parse_float=Decimal, parse_constant=_reject_constant,
                          object_pairs_hook=_reject_duplicate_keys)
    except RecursionError:
        raise messages.malformed_body("The body is nested too deeply.") from None
    except ValueError as error:
        raise messages.malformed_body(f"The body is not valid JSON ({error}).") from None
    if _depth(body) > MAX_DEPTH:  # the checks after this one recurse: refuse here, not with a RecursionError
        raise messages.malformed_body(f"The body is nested too deeply (more than {MAX_DEPTH} levels).")
    if not isinstance(body, dict):
        raise messages.malformed_body("The body must be a JSON object, not a list or a single value.")
    return body


def _field_name(path) -> str:
    return ".".join(str(part) for part in path)


def schema_errors(name: str, instance: dict) -> list[dict]:
    errors = {}
    for error in validator(name).iter_errors(instance):
        if error.validator == "additionalProperties":
            # Named where it failed: an unknown key of a nested object (filter.usr) is refused with its path, not
            # looked for among the top level's keys (where it found none, and the body passed).
            path, known = list(error.absolute_path), list(error.schema.get("properties", {}))
            patterns = list(error.schema.get("patternProperties", {}))
            extras = [extra for extra in sorted(set(error.instance) - set(known))
                      if not any(re.search(pattern, extra) for pattern in patterns)]
            for extra in extras:
                field = _field_name([*path, extra])
                errors[field] = field_error(field, messages.unknown_nested_field(field, _field_name(path), known)
                                            if path else messages.unknown_field(field, known))
            if extras:
                continue  # else a schema this cannot read: refused below with jsonschema's own words, never passed
        if error.validator == "required":
            missing = error.message.split("'")[1]
            field = _field_name([*error.absolute_path, missing])
            keyword = "required"
        else:
            field = _field_name(error.absolute_path)
            keyword = error.validator
        errors.setdefault(field, field_error(field, messages.schema_message(field, keyword, error.message)))
    return list(errors.values())


def _walk_numbers(value, path, errors):
    """Decimals become floats (as every JSON reader sees them); huge integers are refused."""
    if isinstance(value, dict):
        return {k: _walk_numbers(v, f"{path}.{k}", errors) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk_numbers(v, f"{path}.{i}", errors) for i, v in enumerate(value)]
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and abs(value) > SAFE_INTEGER:
        errors.append(field_error(path, f"{path} {messages.METADATA_UNSAFE_INTEGER}"))
    if isinstance(value, Decimal):
        number = float(value)
        # 1e400 would become Infinity (which no JSON reader takes back) and 1e-400 silently 0.
        if not math.isfinite(number) or (number == 0 and value != 0):
            errors.append(field_error(path, f"{path} {messages.METADATA_OUT_OF_RANGE}"))
        return number
    return value


def money_body(schema_name: str, raw: bytes, content_type: str, decimals: int) -> dict:
    """A deposit or charge body, validated, with `amount` as canonical text ready for Paywalls."""
    body = parse_json_object(raw, content_type)
    errors = schema_errors(schema_name, body)  # jsonschema reads Decimal as a number
    if "amount" in body and not any(e["field"] == "amount" for e in errors):
        amount = amounts.parse(body["amount"])
        if amounts.fraction_digits(amount) > decimals:
            errors.append(field_error("amount", messages.too_many_decimals(decimals)))
        else:
            body["amount"] = amounts.canonical(amount)
    if isinstance(body.get("metadata"), dict):
        body["metadata"] = _walk_numbers(body["metadata"], "metadata", errors)
        size = len(json.dumps(body["metadata"], separators=(",", ":"), ensure_ascii=False).encode())
        if size > MAX_METADATA_BYTES:
            errors.append(field_error("metadata", messages.METADATA_TOO_LARGE))
    if errors:
        raise messages.validation(errors)
    return body


def dry_run(args) -> bool:
    """?dry_run=true on a deposit or charge. Only true and false: a value that means something in one tool
    ("1", "yes", "on") and nothing in another must neither move money nor quietly not."""
    values = args.getlist("dry_run")
    if not values:
        return False
    if len(values) == 1 and values[0] in ("true", "false"):
        return values[0] == "true"
    raise messages.invalid_query("dry_run", messages.DRY_RUN_VALUE)


def query(schema_name: str, args) -> dict:
    values = {key: args.get(key) for key in args}
    errors = schema_errors(schema_name, values)
    if errors:
        raise messages.validation(errors)
    return values
