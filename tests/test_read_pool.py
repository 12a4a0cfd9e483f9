"""The fast reads' connection pool (guanhao.reader.ReadPool) on a real PostgreSQL: at most `size` connections,
fair hand-over to the longest waiter, a bounded wait, a broken connection dropped and replaced, and close."""

import asyncio

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from guanhao.reader import ReadPool

pytestmark = pytest.mark.postgres


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _pool(database: str, *, size: int, timeout: float = 5) -> ReadPool:
    return ReadPool(_dsn(database), size=size, timeout=timeout, server_settings={"application_name": "read-pool-test"})


def test_no_more_connections_than_its_size_and_every_read_answered(database):
    async def run() -> set[int]:
        pool = _pool(database, size=2)
        try:
            rows = await asyncio.gather(
                *(pool.fetchrow("SELECT pg_backend_pid() AS pid, pg_sleep(0.01), $1::int AS n", n) for n in range(20))
            )
        finally:
            await pool.close()
        assert [r["n"] for r in rows] == list(range(20))
        return {r["pid"] for r in rows}

    assert len(asyncio.run(run())) == 2


def test_a_connection_given_back_goes_to_the_longest_waiter_not_a_newcomer(database):
    async def run() -> list[str]:
        pool = _pool(database, size=1)
        order: list[str] = []

        async def read(name: str, seconds: float) -> None:
            await pool.fetchrow("SELECT pg_sleep($1::float)", seconds)
            order.append(name)

        try:
            first = asyncio.create_task(read("first", 0.3))
            await asyncio.sleep(0.05)  # `first` holds the one connection
            waiting = [asyncio.create_task(read(f"waiter {i}", 0)) for i in range(3)]
            await asyncio.sleep(0.05)  # the three wait, in this order
            await first
            # The connection went straight to `waiter 0`: it is not idle for a read that arrives now to take.
            assert pool._idle == []
            late = asyncio.create_task(read("newcomer", 0))
            await asyncio.gather(*waiting, late)
        finally:
            await pool.close()
        return order

    assert asyncio.run(run()) == ["first", "waiter 0", "waiter 1", "waiter 2", "newcomer"]


def test_a_read_waits_at_most_the_timeout_for_a_connection(database):
    async def run() -> None:
        pool = _pool(database, size=1, timeout=0.2)
        try:
            busy = asyncio.create_task(pool.fetchrow("SELECT pg_sleep(1)"))
            await asyncio.sleep(0.05)
            with pytest.raises(TimeoutError) as refused:
                await pool.fetchrow("SELECT 1")
            assert isinstance(refused.value, OSError)  # what the reader answers 503 for
            await busy
            assert (await pool.fetchrow("SELECT 2 AS n"))["n"] == 2  # the timed-out waiter left nothing behind
        finally:
            await pool.close()

    asyncio.run(run())


def test_a_read_whose_connection_the_server_ended_runs_again_on_a_new_one(database):
    async def run() -> None:
        pool = _pool(database, size=1)
        admin = await asyncpg.connect(_dsn(database))
        try:
            for settle in (0, 0.2):  # the end noticed when the read is sent, or already before it
                before = (await pool.fetchrow("SELECT pg_backend_pid() AS pid"))["pid"]
                await admin.execute("SELECT pg_terminate_backend($1)", before)
                await asyncio.sleep(settle)
                after = (await pool.fetchrow("SELECT pg_backend_pid() AS pid"))["pid"]
                assert after != before
                assert pool._open == 1
        finally:
            await admin.close()
            await pool.close()

    asyncio.run(run())


def test_a_failing_statement_is_not_run_twice_and_its_connection_not_reused(database):
    async def run() -> None:
        pool = _pool(database, size=1)
        try:
            before = (await pool.fetchrow("SELECT pg_backend_pid() AS pid"))["pid"]
            with pytest.raises(asyncpg.DivisionByZeroError):
                await pool.fetchrow("SELECT 1 / $1::int", 0)
            assert (await pool.fetchrow("SELECT pg_backend_pid() AS pid"))["pid"] != before
            assert pool._open == 1
        finally:
            await pool.close()

    asyncio.run(run())


def test_a_cancelled_read_does_not_hand_its_connection_on(database):
    async def run() -> None:
        pool = _pool(database, size=1)
        try:
            slow = asyncio.create_task(pool.fetchrow("SELECT pg_backend_pid() AS pid, pg_sleep(5)"))
            await asyncio.sleep(0.1)
            slow.cancel()
            with pytest.raises(asyncio.CancelledError):
                await slow
            # The connection was mid-statement: dropped, not reused; the next read opens a fresh one at once.
            assert (await asyncio.wait_for(pool.fetchrow("SELECT 3 AS n"), 2))["n"] == 3
            assert pool._open == 1
        finally:
            await pool.close()

    asyncio.run(run())


def test_a_closed_pool_refuses_reads_and_ends_its_waiters(database):
    async def run() -> None:
        pool = _pool(database, size=1)
        busy = asyncio.create_task(pool.fetchrow("SELECT pg_sleep(0.3)"))
        await asyncio.sleep(0.05)
        waiter = asyncio.create_task(pool.fetchrow("SELECT 1"))
        await asyncio.sleep(0.05)
        await pool.close()
        with pytest.raises(OSError):
            await waiter
        await busy  # a read in flight finishes; its connection is closed when given back
        assert pool._open == 0
        with pytest.raises(OSError):
            await pool.fetchrow("SELECT 1")

    asyncio.run(run())
