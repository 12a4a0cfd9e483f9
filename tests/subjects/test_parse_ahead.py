"""bulk.parse_ahead: the batches parsed in a thread, one ahead, in order; a reader's error raised in the caller."""

import json

import pytest

from guanhao.subjects import bulk


def _line(n: int) -> bytes:
    return json.dumps({"kind": "binding", "shop_id": f"shop-{n}", "account_id": f"acc-{n}"}).encode()


def test_batches_come_back_in_order_with_bad_lines_by_number():
    batches = [[(1, _line(1)), (2, b"{not json"), (3, b"  ")], [(4, _line(4)), (5, None)], [(6, _line(6))]]
    got = list(bulk.parse_ahead(iter(batches)))
    assert [[ln.number for ln in p.lines] for p in got] == [[1], [4], [6]]
    assert [[n for n, _ in p.rejected] for p in got] == [[2], [5], []]
    assert [p.last for p in got] == [3, 5, 6]


def test_a_reader_error_is_raised_where_its_batch_would_have_been():
    def batches():
        yield [(1, _line(1))]
        raise OSError("disk gone")

    seen = []
    with pytest.raises(OSError, match="disk gone"):
        for parsed in bulk.parse_ahead(batches()):
            seen.append(parsed.last)
    assert seen == [1]


def test_the_caller_may_stop_early():
    batches = ([(n, _line(n))] for n in range(1, 1000))
    for parsed in bulk.parse_ahead(batches):
        if parsed.last == 3:
            break  # the thread stops; nothing hangs


def test_after_drops_what_another_import_committed():
    parsed = bulk.parse([(1, _line(1)), (2, b"[]"), (3, _line(3))])
    rest = parsed.after(2)
    assert [ln.number for ln in rest.lines] == [3] and rest.rejected == [] and rest.last == 3
