"""The token form: HTML form fields in, the settings object of schemas/token-settings.json out.

The console sends exactly what the CLI and the admin API send to tokens.parse_spec, so one schema and one set of
messages judge all three. Only the form's own shapes are translated here: checkboxes to a list, comma-separated
text to a list, a blank field to "not given" (create) or "remove this limit" (edit)."""

from werkzeug.datastructures import MultiDict

from .. import tokens

TEXT = ("label", "notes", "max_amount", "daily_cap", "monthly_cap", "user_pattern", "rate_limit", "namespace", "feed",
        "expires_in", "expires_at")
LISTS = ("required_metadata", "dedupe_on")  # typed as comma-separated text
# Blank on edit removes the setting, as `--daily-cap none` does on the CLI; blank notes clear them.
CLEARED_BY_BLANK = {"notes": None, "max_amount": None, "daily_cap": None, "monthly_cap": None, "user_pattern": None,
                    "rate_limit": None, "namespace": None, "expires_at": None, "feed": "own"}
MAX_FIELD_CHARS = 5000  # far above any setting's limit: the schema names the field; this only bounds the work


def _split(text: str) -> list[str]:
    return [item.strip() for item in text.replace("\n", ",").split(",") if item.strip()]


def spec_from(form: MultiDict, creating: bool) -> dict:
    spec = {}
    for name in TEXT:
        raw = form.get(name)
        if raw is None:
            continue
        value = raw[:MAX_FIELD_CHARS] if name in ("label", "notes") else raw.strip()[:MAX_FIELD_CHARS]
        if name == "label":
            spec[name] = value.strip()
        elif value == "" or (name == "notes" and not value.strip()):
            if not creating and name in CLEARED_BY_BLANK:
                spec[name] = CLEARED_BY_BLANK[name]
        else:
            spec[name] = value
    if creating or "operations_present" in form:
        spec["operations"] = [op for op in form.getlist("operations") if op][:len(tokens.OPERATIONS) + 5]
    for name in LISTS:
        raw = form.get(name)
        if raw is None:
            continue
        items = _split(raw[:MAX_FIELD_CHARS])
        if items or not creating:
            spec[name] = items
    if not creating and spec.get("expires_in"):
        spec.pop("expires_at", None)  # a new relative expiry replaces the shown absolute one
    return spec


def values_of(described: dict) -> dict:
    """A token's settings as the edit form shows them."""
    limits = described["limits"]
    return {
        "label": described["label"], "notes": described["notes"] or "", "operations": described["operations"],
        "max_amount": limits["max_amount"] or "", "daily_cap": limits["daily_cap"] or "",
        "monthly_cap": limits["monthly_cap"] or "", "user_pattern": limits["user_pattern"] or "",
        "required_metadata": ", ".join(limits["required_metadata"]), "rate_limit": limits["rate_limit"] or "",
        "dedupe_on": ", ".join(limits["dedupe_on"]), "namespace": described["namespace"] or "",
        "feed": described["feed"] or "own", "expires_in": "", "expires_at": described["expires_at"] or "",
    }


def values_from(form: MultiDict) -> dict:
    """What the operator typed, shown again beside the errors (never a secret: the form has none)."""
    values = {name: form.get(name, "")[:MAX_FIELD_CHARS] for name in TEXT + LISTS}
    values["operations"] = form.getlist("operations")
    return values


DEFAULT_VALUES = {"label": "", "notes": "", "operations": ["deposit"], "max_amount": "", "daily_cap": "",
                  "monthly_cap": "", "user_pattern": "", "required_metadata": "", "rate_limit": "",
                  "dedupe_on": "user, amount, metadata", "namespace": "", "feed": "own", "expires_in": "",
                  "expires_at": ""}


def errors_by_field(errors: list[dict]) -> dict[str, str]:
    found = {}
    for error in errors:
        found.setdefault(error["field"] or "form", error["message"])
    return found
