"""The application factory: configuration in, a wired Flask app out."""

import logging
import os

from flask import Flask, current_app, g, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound, RequestEntityTooLarge

from . import admin, api, batches, clock, config, db, deliveries, health, hooks, logs, messages, migrate, proxies, sandbox, \
    validation, webhooks
from .ratelimits import RateLimits
from .upstream import Upstream

from . import console  # the operator console, /console (issue 17)

log = logging.getLogger("relay")

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Cache-Control": "no-store",
    "Strict-Transport-Security": "max-age=31536000",
}


def create_app(overrides: dict | None = None, check_schema: bool = True) -> Flask:
    """`check_schema=False` only for the commands that migrate (`db upgrade`, `run`)."""
    settings = config.from_env(overrides=overrides)
    app = Flask(__name__, instance_relative_config=True)
    logs.configure(settings["RELAY_LOG_LEVEL"])
    if settings["SANDBOX"]:
        settings["PAYWALLS_BASE_URL"] = sandbox.ensure_embedded(settings["PAYWALLS_API_KEY"])
        log.warning(messages.SANDBOX_BANNER)
    app.config.update(RELAY=settings, MAX_CONTENT_LENGTH=validation.MAX_BODY_BYTES)
    if settings["RELAY_TRUST_PROXY"]:
        app.wsgi_app = proxies.TrustedProxyFix(app.wsgi_app, settings["RELAY_TRUST_PROXY"],
                                               proxies.allow_list(settings["FORWARDED_ALLOW_IPS"]))

    db.init_app(app, settings["DATABASE_URL"] or db.default_url())
    serving = os.environ.get("RELAY_SERVER") == "gunicorn"  # set by gunicorn.conf.py
    if check_schema:
        try:
            migrate.check_current(app.extensions["relay.engine"])
        except migrate.DatabaseUnreachable as error:
            # A worker that refused to boot would make gunicorn stop every worker: a database blip while one
            # restarts must not take the relay down. It serves 503s, and /readyz says why, until the database answers.
            log.error(f"{error} Serving anyway: /readyz answers 503 until the database answers." if serving else str(error))
            if not serving:
                raise
        except migrate.SchemaNotCurrent as error:
            log.error(str(error))
            raise
    app.extensions["relay.clock"] = clock.Clock()
    app.extensions["relay.upstream"] = Upstream(settings)
    app.extensions["relay.ratelimits"] = RateLimits(settings)
    logs.init_app(app)
    register_errors(app)
    console.init_app(app)
    app.after_request(headers)
    for blueprint in (api.bp, hooks.bp, admin.bp, health.bp, webhooks.bp):
        app.register_blueprint(blueprint)
    if serving:  # the CLI commands stay quiet; only a serving process runs bulk batches and delivers events
        batches.start(app)
        deliveries.start(app)
        logs.startup(settings, str(app.extensions["relay.engine"].url), os.environ.get("RELAY_SERVER_WORKERS"),
                     os.environ.get("RELAY_SERVER_THREADS"))
    return app


def headers(response):
    response.headers.update(SECURITY_HEADERS)
    if request.blueprint == "console":  # HTML pages with their own CSS and JS files; the API stays default-src 'none'
        response.headers.update(console.HEADERS)
    if current_app.config["RELAY"]["SANDBOX"]:
        response.headers["X-Relay-Sandbox"] = "true"
    return response


def register_errors(app: Flask):
    @app.errorhandler(messages.Problem)
    def problem(error: messages.Problem):
        return error.response(request_id=g.get("request_id"))

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_error):
        return messages.body_too_large(validation.MAX_BODY_BYTES).response(request_id=g.get("request_id"))

    @app.errorhandler(NotFound)
    def not_found(_error):
        return messages.not_found("This path").response(request_id=g.get("request_id"))

    @app.errorhandler(MethodNotAllowed)
    def not_allowed(error: MethodNotAllowed):
        response = messages.method_not_allowed().response(request_id=g.get("request_id"))
        if error.valid_methods:  # RFC 9110: a 405 names the methods the path does take
            response.headers["Allow"] = ", ".join(sorted(error.valid_methods))
        return response

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        return messages.http_error(error.code or 500, error.name).response(request_id=g.get("request_id"))

    def database_down(_error):
        log.exception("database unavailable")
        return messages.database_unavailable().response(request_id=g.get("request_id"))
    for failure in db.FAILURES:
        app.register_error_handler(failure, database_down)

    @app.errorhandler(Exception)
    def unexpected(_error):
        log.exception("unexpected error")
        return messages.internal_error().response(request_id=g.get("request_id"))
