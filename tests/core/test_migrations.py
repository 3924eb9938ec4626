"""Migrations: one head, models and migrations agree on Postgres, downgrade and upgrade work."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[2]


def test_single_head() -> None:
    config = Config(str(ROOT / "alembic.ini"))
    assert len(ScriptDirectory.from_config(config).get_heads()) == 1


def test_upgrade_check_downgrade_on_a_fresh_postgres_database() -> None:
    url = make_url(os.environ["CLUSTERPORT_DATABASE_URL"])
    name = f"cp_mig_{uuid.uuid4().hex[:8]}"
    admin = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    engine = create_engine(
        url.set(drivername="postgresql+psycopg", database=name).render_as_string(
            hide_password=False
        )
    )
    try:
        config = Config(str(ROOT / "alembic.ini"))
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
            command.check(config)  # raises when models and migrations disagree
            command.downgrade(config, "base")
            command.upgrade(config, "head")
    finally:
        engine.dispose()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
