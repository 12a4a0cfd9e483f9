"""guanhao — shop official account upgrade service (店铺官方账号升级)."""

__version__ = "0.1.0"
