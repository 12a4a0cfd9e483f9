"""guanhao.process.settle: what a process loaded is taken out of the collector's walks, once per process."""

import gc

from guanhao import process


def test_settle_freezes_what_is_loaded_once_per_process(monkeypatch):
    monkeypatch.setattr(process, "_settled", False)
    collections = []
    monkeypatch.setattr(process.gc, "collect", lambda *a: collections.append(a) or 0)
    before = gc.get_freeze_count()
    loaded = [object() for _ in range(10)]  # noqa: F841 (alive across the call: frozen with the rest)
    process.settle()
    assert gc.get_freeze_count() > before
    assert len(collections) == 1
    process.settle()  # a second app's start-up in the same process (tests): nothing more
    assert len(collections) == 1
