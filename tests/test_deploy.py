"""Deploying as the README says: install the package non-editable (requirements.txt), run the Procfile's release
and web commands from the application directory, create a token, and send the README's curl. On SQLite (the
default file) and on PostgreSQL given as `postgres://`, the form Heroku and Render set."""

import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig

import pytest
import requests

from conftest import SANDBOX_KEY, free_port, needs_postgres, postgres_database, relay_env, wait_until_up

ROOT = pathlib.Path(__file__).resolve().parents[1]
APP_FILES = ["Procfile", "gunicorn.conf.py", "pyproject.toml", "README.md", "requirements.txt", ".python-version"]


def procfile() -> dict:
    return dict(line.split(": ", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line.strip())


def readme_curl() -> str:
    """The Quick start's deposit curl, as printed by `make run`."""
    return re.search(r"^  (curl -s -X POST http://127\.0\.0\.1:8000\S+ .*)$", (ROOT / "README.md").read_text(), re.M).group(1)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A checkout of the application and a fresh virtualenv with the relay installed from requirements.txt, not
    editable. The dependencies are the test environment's (a .pth file), so the test needs no download; the relay
    itself, its console script and its package data come from the install."""
    base = tmp_path_factory.mktemp("deploy")
    app = base / "app"
    app.mkdir()
    for name in APP_FILES:
        shutil.copy(ROOT / name, app / name)
    for name in ("relay", "schemas"):
        shutil.copytree(ROOT / name, app / name, ignore=shutil.ignore_patterns("__pycache__"))
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    gunicorn = venv / "bin" / "gunicorn"  # the console script pip writes when it installs gunicorn itself
    gunicorn.write_text(f"#!{venv / 'bin' / 'python'}\nimport sys\nfrom gunicorn.app.wsgiapp import run\nsys.exit(run())\n")
    gunicorn.chmod(0o755)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                    "--no-build-isolation", "-r", "requirements.txt"], cwd=app, check=True,
                   env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    located = subprocess.run([str(venv / "bin" / "python"), "-c", "import relay; print(relay.__file__)"],
                             cwd=base, capture_output=True, text=True, check=True).stdout
    assert located.startswith(str(site)), located  # the installed copy, not the repository's
    return app, venv


def deploy_env(venv, **settings) -> dict:
    env = relay_env(settings)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
    env.pop("VIRTUAL_ENV", None)
    return env


def systemd_unit(app, venv) -> dict:
    """deploy/paywalls-relay.service's commands, with its paths moved to this test's checkout and virtualenv."""
    unit = (ROOT / "deploy" / "paywalls-relay.service").read_text()
    lines = dict(line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#"))
    assert lines["WorkingDirectory"] == "/srv/paywalls-relay"

    def moved(command):
        return shlex.join(shlex.split(command.replace("/srv/paywalls-relay/.venv", str(venv))
                                      .replace("/srv/paywalls-relay", str(app))))
    return {"release": moved(lines["ExecStartPre"]), "web": moved(lines["ExecStart"])}


def release_web_curl(app, venv, env, commands=None):
    commands = commands or procfile()
    release = subprocess.run(commands["release"], shell=True, cwd=app, env=env, capture_output=True, text=True, timeout=120)
    assert release.returncode == 0, release.stderr
    created = subprocess.run(["paywalls-relay", "tokens", "create", "--label", "deploy test", "--json"], cwd=app,
                             env=env, capture_output=True, text=True, timeout=60)
    assert created.returncode == 0, created.stderr
    token = json.loads(created.stdout)["token"]
    port = free_port()
    web = subprocess.Popen(commands["web"], shell=True, cwd=app, env={**env, "PORT": str(port)},
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        wait_until_up(f"http://127.0.0.1:{port}")
        assert requests.get(f"http://127.0.0.1:{port}/readyz", timeout=10).status_code == 200
        curl = readme_curl().replace("http://127.0.0.1:8000", f"http://127.0.0.1:{port}").replace("pwr_...", token)
        answer = subprocess.run(shlex.split(curl) + ["-i"], capture_output=True, text=True, timeout=30).stdout
    finally:
        os.killpg(web.pid, 15)
        web.wait(15)
    assert " 200 " in answer.splitlines()[0], answer + web.stderr.read().decode()[-3000:]
    assert answer.rstrip().endswith('{"balanceFormatted": "10.00"}')
    return answer


def test_installed_release_and_web_share_the_default_sqlite_file(installed, sandbox):
    app, venv = installed
    env = deploy_env(venv, RELAY_ENV="production", PAYWALLS_API_KEY=SANDBOX_KEY, PAYWALLS_BASE_URL=sandbox.url,
                     WEB_CONCURRENCY=2, RELAY_THREADS=2)
    release_web_curl(app, venv, env)
    assert (app / "instance" / "relay.db").exists()
    assert not list(venv.rglob("relay.db"))  # nothing inside the virtualenv


@needs_postgres
@pytest.mark.postgres
def test_installed_release_and_web_on_a_postgres_url(installed, sandbox):
    app, venv = installed
    with postgres_database() as url:
        heroku_style = "postgres://" + url.split("://", 1)[1]
        env = deploy_env(venv, RELAY_ENV="production", PAYWALLS_API_KEY=SANDBOX_KEY, PAYWALLS_BASE_URL=sandbox.url,
                         DATABASE_URL=heroku_style, WEB_CONCURRENCY=2, RELAY_THREADS=2)
        release_web_curl(app, venv, env)


def test_the_systemd_unit_runs_the_release_step_and_gunicorn_from_the_checkout(installed, sandbox):
    app, venv = installed
    for stale in (app / "instance").glob("relay.db*"):
        stale.unlink()
    env = deploy_env(venv, RELAY_ENV="production", PAYWALLS_API_KEY=SANDBOX_KEY, PAYWALLS_BASE_URL=sandbox.url,
                     WEB_CONCURRENCY=1, RELAY_THREADS=2)
    commands = systemd_unit(app, venv)
    assert commands["release"].endswith("/bin/paywalls-relay db upgrade")
    web = shlex.split(commands["web"])
    assert web[0] == str(venv / "bin" / "gunicorn") and web[1:] == shlex.split(procfile()["web"])[1:]
    release_web_curl(app, venv, env, commands)
    assert (app / "instance" / "relay.db").exists()


def test_python_version_and_requirements_are_what_the_buildpacks_read():
    version = (ROOT / ".python-version").read_text().strip()
    assert re.fullmatch(r"3\.\d+", version)  # the major form: the platform picks the newest patch release
    assert f"{sys.version_info.major}.{sys.version_info.minor}" == version  # what the tests run on
    requirements = [line for line in (ROOT / "requirements.txt").read_text().splitlines()
                    if line.strip() and not line.startswith("#")]
    assert requirements == ["."]
    readme = (ROOT / "README.md").read_text()
    assert f"Start Command `{procfile()['web']}`" in readme and f"Pre-Deploy Command `{procfile()['release']}`" in readme
    assert "Build Command `pip install -r requirements.txt`" in readme


def test_web_refuses_an_unmigrated_database_and_names_the_release_step(installed, sandbox, tmp_path):
    app, venv = installed
    env = deploy_env(venv, RELAY_ENV="production", PAYWALLS_API_KEY=SANDBOX_KEY, PAYWALLS_BASE_URL=sandbox.url,
                     DATABASE_URL=f"sqlite:///{tmp_path / 'empty.db'}", WEB_CONCURRENCY=1)
    web = subprocess.run(procfile()["web"], shell=True, cwd=app, env={**env, "PORT": str(free_port())},
                         capture_output=True, text=True, timeout=60)
    assert web.returncode != 0
    assert "run `paywalls-relay db upgrade`" in web.stderr
