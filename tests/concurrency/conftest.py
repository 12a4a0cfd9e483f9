"""Shared by the PostgreSQL race tests: an HTTP driver on the live server and an engine for SQL checks."""

import httpx
import pytest
import sqlalchemy as sa

from tests.factories import Api


@pytest.fixture
def http(live_server):
    with httpx.Client(base_url=live_server, timeout=30) as client:
        yield client


@pytest.fixture
def driver(http, admin_headers):
    return Api(http, admin_headers)


@pytest.fixture
def sql(database):
    engine = sa.create_engine(database)
    yield engine
    engine.dispose()
