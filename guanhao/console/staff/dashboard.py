"""数据看板: the programme at a glance — KPI cards, upgrades per day by origin, the manual funnel, rejection reasons
and cancels within the window, each chart drawn on the server with its figures as a table (guanhao.upgrades.stats)."""

from fastapi import Query

from guanhao.console import charts, labels
from guanhao.console.session import CurrentVisit
from guanhao.console.staff.common import render, router, staff
from guanhao.i18n import _l
from guanhao.i18n import render as render_text
from guanhao.upgrades import rules, stats
from guanhao.upgrades.models import Origin

WINDOWS = (7, 14, 30)


def reason_label(code: str, lang: str) -> str:
    """A rejection or skip reason in words: an eligibility check, an outcome, or a wave's own reasons."""
    if code in labels.LABELS["skip_reason"]:
        return labels.text("skip_reason", code, lang)
    return render_text(rules.reason(code).message, lang) or code


@router.get("")
def dashboard(current: CurrentVisit, days: int = Query(default=14, ge=1, le=90)):
    staff(current)
    lang = current.lang
    with current.unit() as (session, now):
        within = stats.window(now, days)
        kpis = stats.kpis(session, current.policy, now=now, within=within)
        per_day = stats.upgrades_per_day(session, within=within)
        funnel = stats.funnel(session, within=within)
        reasons = stats.rejection_reasons(session, within=within)
        cancels = stats.cancellations_per_day(session, within=within)
    day_labels = [d.strftime("%m-%d") for d in within.day_list]
    every = 1 if days <= 7 else 2 if days <= 14 else 5
    origins = [o.value for o in Origin]
    upgrades_chart = charts.columns(
        day_labels,
        [(labels.text("origin", o, lang), [per_day[d][o] for d in within.day_list]) for o in origins],
        label_every=every,
    )
    funnel_rows = [
        (_l("Submitted").render(lang), funnel.submitted),
        (_l("Confirmed by the holder").render(lang), funnel.confirmed),
        (_l("Succeeded").render(lang), funnel.succeeded),
    ]
    reason_rows = [(reason_label(code, lang), n) for code, n in reasons.most_common()]
    cancel_chart = charts.columns(
        day_labels, [(_l("Cancelled").render(lang), [cancels[d] for d in within.day_list])], label_every=every
    )
    return render(
        current,
        "staff/dashboard.html",
        nav="dashboard",
        days=days,
        windows=WINDOWS,
        within=within,
        kpis=kpis,
        per_day=per_day,
        origins=origins,
        upgrades_chart=upgrades_chart,
        funnel_rows=funnel_rows,
        funnel_chart=charts.bars(funnel_rows),
        reason_rows=reason_rows,
        origin_names=[labels.text("origin", o, lang) for o in origins],
        upgrades_rows=[
            [d.isoformat(), *(per_day[d][o] for o in origins), sum(per_day[d].values())] for d in within.day_list
        ],
        reason_table=[[text, code, n] for (text, n), (code, _) in zip(reason_rows, reasons.most_common(), strict=True)],
        cancel_rows=[[d.isoformat(), cancels[d]] for d in within.day_list],
        reasons_chart=charts.bars(reason_rows, label_width=220),
        cancels=cancels,
        cancel_chart=cancel_chart,
    )
