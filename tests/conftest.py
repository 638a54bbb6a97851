"""Shared fixtures. Real services are used when present; with CI=true a missing one fails the test."""

from __future__ import annotations

import os
import socket
import uuid

import pytest

MOSQUITTO = ("127.0.0.1", 1883)
POSTGRES = ("127.0.0.1", 5432)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _reachable(addr: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(addr, timeout=1.0):
            return True
    except OSError:
        return False


def _require(addr: tuple[str, int], what: str) -> None:
    if _reachable(addr):
        return
    msg = f"{what} not reachable on {addr[0]}:{addr[1]}"
    if IN_CI:
        pytest.fail(msg + " (CI=true: the service must run; start it in .ci/run)")
    pytest.skip(msg)


@pytest.fixture(scope="session")
def mosquitto_url() -> str:
    """URL of the real Mosquitto broker on 127.0.0.1:1883."""
    _require(MOSQUITTO, "Mosquitto")
    return f"mqtt://{MOSQUITTO[0]}:{MOSQUITTO[1]}"


@pytest.fixture
def lab_id() -> str:
    """A lab name (topic prefix segment) of this test's own: sdl/<lab_id>/..."""
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def embedded_broker():
    """One embedded (in-process) broker for the test session."""
    from sdl.transport import EmbeddedBroker

    broker = EmbeddedBroker()
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def postgres_url():
    """A PostgreSQL URL whose search_path is a fresh schema of this test's own (dropped afterwards)."""
    _require(POSTGRES, "PostgreSQL")
    import sqlalchemy as sa

    schema = f"sdl_test_{uuid.uuid4().hex[:10]}"
    base = os.environ.get("SDL_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    admin = sa.create_engine(base)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    yield f"{base}?options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()
