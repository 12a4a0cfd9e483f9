"""`guanhao serve` in a process of its own, for the tests that need the real command (its workers, its embedded
worker, its start-up checks): one way to start it on a free port, wait until it answers, and stop it."""

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import httpx

GUANHAO = Path(sys.executable).with_name("guanhao")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(log_path: Path, chars: int = 4000) -> str:
    return log_path.read_text(errors="replace")[-chars:]


@contextlib.contextmanager
def guanhao_serve(
    env: Mapping[str, str],
    log_path: Path,
    *,
    args: Sequence[str] = (),
    ready: str = "/readyz",
    timeout: float = 180,
) -> Iterator[tuple[str, subprocess.Popen]]:
    """`guanhao serve --host 127.0.0.1 --port <free> *args` with `env` (its whole environment), its output in
    `log_path`; yields (base URL, process) once GET `ready` answers 200, and stops it afterwards (SIGTERM, SIGKILL
    after 20 s). `timeout` is generous: several workers importing the app on a busy 2-core machine."""
    port = free_port()
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [str(GUANHAO), "serve", "--host", "127.0.0.1", "--port", str(port), *args],
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert proc.poll() is None, _tail(log_path)
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}{ready}", timeout=2, trust_env=False).status_code == 200:
                    break
            assert time.monotonic() < deadline, f"guanhao serve not ready in {timeout:.0f} s: " + _tail(log_path)
            time.sleep(0.2)
        yield base, proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
