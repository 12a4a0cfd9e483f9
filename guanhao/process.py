"""What a long-running process does once it has loaded."""

import gc

_settled = False


def settle() -> None:
    """Takes everything loaded so far — modules, the ORM's mappings, the app and its routes, the policy, the
    message catalogs — out of the cyclic garbage collector's walks, once per process (`gc.freeze`). They live
    as long as the process, and every full collection walked them again: 50–90 ms at a time, a pause that
    every request in flight (or a long import) waited out. What is made later is collected as before."""
    global _settled
    if _settled:
        return
    _settled = True
    gc.collect()  # what start-up left behind goes now, not frozen with the rest
    gc.freeze()
