"""The account holder's page (账号持有人确认, phone-sized): the `confirmation_url` the holder receives opens it.

It asks what GET /api/v1/confirmations/{token} tells and posts the same answers (`upgrades.accept` /
`upgrades.decline`). The token in the path is the capability (R-62); expired, answered and unknown links
each get a page that says so.
"""

from fastapi import APIRouter

from guanhao import errors, pii
from guanhao.console import pages
from guanhao.console.session import CurrentVisit, Form, Visit
from guanhao.subjects import service as subjects
from guanhao.upgrades import lifecycle, rules
from guanhao.upgrades import service as upgrades
from guanhao.upgrades.models import State

router = APIRouter(prefix="/confirm", route_class=pages.ConsoleRoute, include_in_schema=False)


def _closed(status: State) -> str | None:
    """Why the link no longer takes an answer, for the page to say (the services refuse it all the same)."""
    if status == State.SUBMITTED:
        return None
    return "expired" if status == State.EXPIRED else "answered"


def _page(current: Visit, token: str, *, status: int = 200, error=None):
    with current.unit() as (session, now):
        try:
            app = upgrades.by_token(session, token)
        except errors.NotFound:
            return pages.render(current, "holder/unknown.html", status=404)
        shop = subjects.get_shop(session, app.shop_id)
        subject = subjects.get_subject(session, app.subject_id)
        account = subjects.get_account(session, app.account_id)
        login_phone = pii.masked_phone_from(account.login_phone_enc, context="login_phone")
        app_state = lifecycle.status_at(app, now)
        closed = _closed(app_state)
        consent = next((c for c in upgrades.consents(session, app.id) if c.party == "holder"), None)
    return pages.render(
        current,
        "holder/confirm.html",
        status=status,
        token=token,
        app=app,
        shop=shop,
        subject=subject,
        account=account,
        login_phone=login_phone,
        closed=closed,
        app_status=app_state.value,
        consent=consent,
        error=error,
        what_changes=rules.WHAT_CHANGES,
        what_stays=rules.WHAT_STAYS,
        policy=current.policy,
    )


@router.get("/{token}")
def confirmation(token: str, current: CurrentVisit):
    return _page(current, token[:100])


def _client(current: Visit) -> upgrades.Client:
    request = current.request
    return upgrades.Client(
        address=request.client.host if request.client else None, user_agent=request.headers.get("user-agent")
    )


def _answer(current: Visit, token: str, verb):
    token = token[:100]
    try:
        with current.unit() as (session, now):
            verb(session, token, current.policy, now=now, client=_client(current))
    except (errors.InvalidTransition, errors.ConfirmationExpired):
        return _page(current, token, status=409)
    except errors.NotFound:
        return pages.render(current, "holder/unknown.html", status=404)
    return pages.redirect(current, f"/confirm/{token}")


@router.post("/{token}/accept")
def accept(token: str, current: CurrentVisit, form: Form):
    """确认升级: the same `upgrades.accept` as POST /api/v1/confirmations/{token}/accept."""
    if form.get("agree") != "1":
        return _page(current, token[:100], status=422, error="agree")
    return _answer(current, token, upgrades.accept)


@router.post("/{token}/decline")
def decline(token: str, current: CurrentVisit, form: Form):
    """暂不升级: the same `upgrades.decline` as POST /api/v1/confirmations/{token}/decline."""
    return _answer(current, token, upgrades.decline)
