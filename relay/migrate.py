"""Schema migrations with Alembic, driven from the relay's own configuration."""

import pathlib

from alembic import command
from alembic.config import Config

HERE = pathlib.Path(__file__).resolve().parent


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(HERE / "migrations"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head"):
    command.upgrade(alembic_config(url), revision)


def revision(url: str, message: str):
    command.revision(alembic_config(url), message=message, autogenerate=True)
