"""店铺查询: any shop of any subject (R-62: staff see all) — found by its, its subject's or its account's id, or by
a part of a name — with its official account as the merchant sees it, its applications and its audit rows."""

from fastapi import Query

from guanhao import pii
from guanhao.audit import service as audit
from guanhao.console import labels
from guanhao.console.session import CurrentVisit
from guanhao.console.staff.audit_trail import masked_detail
from guanhao.console.staff.common import render, router, staff
from guanhao.subjects import service as subjects
from guanhao.upgrades import lifecycle
from guanhao.upgrades import service as upgrades

FOUND_MOST = 50
HISTORY = 50
TRAIL = 100


@router.get("/shops")
def lookup(current: CurrentVisit, q: str = Query(default="", max_length=120)):
    staff(current)
    with current.unit() as (session, now):
        shops = subjects.find_shops(session, q, limit=FOUND_MOST)
        rows = [
            {
                "shop": shop,
                "subject": subjects.get_subject(session, shop.subject_id),
                "view": upgrades.official_view(session, shop, current.policy, now=now),
            }
            for shop in shops
        ]
    return render(current, "staff/shops.html", nav="shops", q=q, rows=rows)


@router.get("/shops/{shop_id}")
def shop_page(shop_id: str, current: CurrentVisit):
    staff(current)
    with current.unit() as (session, now):
        shop = subjects.get_shop(session, shop_id)
        subject = subjects.get_subject(session, shop.subject_id)
        view = upgrades.official_view(session, shop, current.policy, now=now)
        quotas = upgrades.subject_quotas(session, subject, current.policy, now=now)
        history = upgrades.applications_for_shop(session, shop.id, before_seq=None, limit=HISTORY)
        trail = audit.for_shop(session, subject_id=shop.subject_id, shop_id=shop.id, limit=TRAIL)
        statuses = {app.id: lifecycle.status_at(app, now).value for app in history}
        reasons = {app.id: upgrades.reasons_at(app, now) for app in history}
        holder = None
        if view.account is not None:
            a = view.account
            holder = pii.open_person(a.holder_name_enc, a.holder_id_number_enc, a.holder_phone_enc, context="person")
    return render(
        current,
        "staff/shop.html",
        nav="shops",
        shop=shop,
        subject=subject,
        view=view,
        holder=holder.masked() if holder else None,
        quotas=quotas,
        history=history,
        statuses=statuses,
        reasons=reasons,
        trail=trail,
        detail_of=masked_detail,
        action_text=lambda a: labels.action_text(a, current.lang),
        now=now,
    )
