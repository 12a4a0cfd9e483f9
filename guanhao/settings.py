"""Every setting comes from the environment (prefix GUANHAO_) through this one object."""

import base64
import json
import os
import secrets
import sys
from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GUANHAO_", extra="ignore")

    var_dir: Path = Path("var")
    database_url: str = ""
    admin_token: str = ""
    sandbox: bool = False
    policy: Path | None = None
    # 32 random bytes, base64: AES-GCM key for personal data at rest.
    pii_key: str = ""
    # 32 random bytes, base64: HMAC key for lookup hashes (blind indexes) and API key hashes.
    hash_key: str = ""
    # Where links handed out point (confirmation URLs, SMS text, printed examples). `guanhao serve` sets it
    # from its --host and --port when it is not given; this default is for commands that serve nothing.
    public_url: str = "http://127.0.0.1:8000"
    log_level: str = "INFO"
    # Run a worker (every background duty) inside the app itself. `guanhao serve` runs one beside the server
    # on its own (unless --no-worker) and sets this off for the app; it is for apps served otherwise, and tests.
    worker: bool = False
    # The older name of `worker`.
    deliver_webhooks: bool = False
    # Comma-separated duties of the app's worker (empty: every duty).
    worker_duties: str = ""
    db_pool_size: int = Field(default=10, ge=1)
    db_max_overflow: int = Field(default=40, ge=0)
    # Request bodies (API.md: past the limit, 413 PAYLOAD_TOO_LARGE at once). JSON routes are buffered up to
    # max_body_bytes; the NDJSON import is streamed, up to max_import_bytes, each line at most max_body_bytes.
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_import_bytes: int = Field(default=256 * 1024 * 1024, ge=1024)
    # The import commits every this many lines, so other writers get their turn between batches.
    import_batch_lines: int = Field(default=5000, ge=1)
    # Seconds a unit of work waits for the database (SQLite's write lock, a PostgreSQL connection, a
    # request's row locks) before it gives up: an HTTP request then answers 503 with Retry-After.
    db_busy_timeout: float = Field(default=5.0, gt=0, le=600)
    # Seconds a wave chunk waits for any one lock before it rolls back and is redone (PostgreSQL): a chunk holds its
    # shops FOR UPDATE, and requests for them wait behind it (R-11; see upgrades/waves.py).
    wave_lock_wait: float = Field(default=1.0, gt=0, le=600)
    # Seconds in the Retry-After of a 503 (database busy or unreachable).
    retry_after: int = Field(default=2, ge=1, le=3600)
    # When set, GET /metrics needs `Authorization: Bearer <this token>`.
    metrics_token: str = ""

    @field_validator("public_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.var_dir / 'guanhao.sqlite3').resolve()}"

    def keys(self) -> tuple[bytes, bytes]:
        """(pii_key, hash_key); without configured keys a dev key pair is kept under var/."""
        if self.pii_key and self.hash_key:
            return _decode_key("GUANHAO_PII_KEY", self.pii_key), _decode_key("GUANHAO_HASH_KEY", self.hash_key)
        if self.pii_key or self.hash_key:
            raise SystemExit("set both GUANHAO_PII_KEY and GUANHAO_HASH_KEY, or neither (dev keys)")
        return _dev_keys(self.var_dir.resolve())


def _decode_key(name: str, value: str) -> bytes:
    try:
        raw = base64.b64decode(value, validate=True)
    except ValueError:
        raise SystemExit(f"{name} is not valid base64") from None
    if len(raw) != 32:
        raise SystemExit(f"{name} must decode to 32 bytes, got {len(raw)}")
    return raw


_warned = False


def _dev_keys(var_dir: Path) -> tuple[bytes, bytes]:
    """Development keys, kept in a file at an absolute path (printed once per process), so that every command
    started from anywhere with the same GUANHAO_VAR_DIR finds the same pair (the database records which; see
    guanhao.keyring)."""
    path = var_dir / "dev-keys.json"
    if not path.exists():
        var_dir.mkdir(parents=True, exist_ok=True)
        data = {
            "pii_key": base64.b64encode(secrets.token_bytes(32)).decode(),
            "hash_key": base64.b64encode(secrets.token_bytes(32)).decode(),
        }
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh)
    data = json.loads(path.read_text())
    global _warned
    if not _warned and not os.environ.get("GUANHAO_QUIET_DEV_KEYS"):
        _warned = True
        print(
            f"WARNING: GUANHAO_PII_KEY / GUANHAO_HASH_KEY not set — using DEVELOPMENT keys from {path}. "
            "Never use these in production: personal data encrypted with them is only as safe as that file.",
            file=sys.stderr,
        )
    return _decode_key("pii_key", data["pii_key"]), _decode_key("hash_key", data["hash_key"])


def public_url_for(host: str, port: int) -> str:
    """The base of links for a server listening on host:port; a wildcard address is reached on loopback."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
