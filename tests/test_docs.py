"""The README promises what the code does: its settings table and its test command."""

import pathlib

from relay.config import SETTINGS

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_documented_with_its_default():
    for setting in SETTINGS:
        default = "(unset)" if setting.default is None else f"`{setting.default}`"
        assert f"| `{setting.name}` | {default} | {setting.meaning} |" in README, setting.name


def test_ci_runs_the_readme_test_command():
    assert "```sh\nmake test\n```" in README
    assert "\nmake test\n" in (ROOT / ".ci" / "run").read_text()


def test_procfile_runs_migrations_and_gunicorn():
    procfile = (ROOT / "Procfile").read_text()
    assert "release: paywalls-relay db upgrade" in procfile
    assert "web: gunicorn -c gunicorn.conf.py 'relay.app:create_app()'" in procfile


def test_the_export_columns_are_the_readmes():
    from relay.ledger import EXPORT_COLUMNS, OUTCOMES
    listed = README.split("An export has these columns, in this order: ", 1)[1].split(".\n", 1)[0]
    assert [name.strip(" `\n") for name in listed.split(",")] == EXPORT_COLUMNS
    for outcome in OUTCOMES:
        assert f"`{outcome}`" in README.split("## Reconciliation", 1)[1]
