"""The SVG charts' geometry (guanhao.console.charts): round axis tops with whole steps, stacked segments that add
up, and bars in proportion."""

from guanhao.console import charts


def test_axis_tops_are_round_and_steps_whole():
    assert [charts.nice_max(v) for v in (0, 1, 2, 3, 5, 7, 11, 40, 101)] == [1, 1, 2, 5, 5, 10, 20, 50, 200]
    chart = charts.columns(["a"], [("x", [5])])
    assert [v for _, v in chart.ticks] == [0, 1, 2, 3, 4, 5]
    chart = charts.columns(["a"], [("x", [40])])
    assert [v for _, v in chart.ticks] == [0, 10, 20, 30, 40, 50]


def test_stacked_columns_and_bars_are_in_proportion():
    chart = charts.columns(["d1", "d2"], [("manual", [1, 0]), ("auto", [1, 2])])
    d1 = [r for r in chart.rects if r.label.startswith("d1")]
    d2 = [r for r in chart.rects if r.label.startswith("d2")]
    assert [r.value for r in d1] == [1, 1] and [r.value for r in d2] == [2]  # zero segments are not drawn
    assert abs(sum(r.h for r in d1) - d2[0].h) < 1e-9
    assert d1[1].y + d1[1].h == d1[0].y  # the second series sits on the first
    bars = charts.bars([("a", 4), ("b", 2), ("c", 0)])
    assert bars.rects[0].w == 2 * bars.rects[1].w and bars.rects[2].w == 0
