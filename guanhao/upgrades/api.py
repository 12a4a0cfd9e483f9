import re
from typing import Annotated, get_args
from urllib.parse import parse_qsl

from fastapi import APIRouter, Body, Path, Query, Request, Response
from fastapi.routing import iter_route_contexts
from pydantic import BaseModel
from starlette._utils import get_route_path
from starlette.datastructures import Headers

from guanhao import clock, errors, problems, reader
from guanhao.auth.service import admin_principal, bearer_token
from guanhao.http import (
    Admin,
    Anonymous,
    Authenticated,
    Bearer,
    BearerToken,
    CursorParam,
    decode_cursor,
    decode_key_cursor,
    feed_cursor,
    key_feed_cursor,
    page,
)
from guanhao.i18n import _l, language
from guanhao.policy import get_policy
from guanhao.schemas import ID_RE, IdPath, problem_responses
from guanhao.settings import get_settings
from guanhao.subjects import service as subjects
from guanhao.subjects.models import Account, Subject
from guanhao.upgrades import lifecycle, lists, ownership, reads, rules, service, visibility
from guanhao.upgrades.schemas import (
    AccountTypeName,
    AdminApplicationOut,
    ApplicationList,
    ApplicationOut,
    ApproveIn,
    ConfirmationOut,
    EligibilityOut,
    OfficialAccountOut,
    OwnershipRecordOut,
    QuotasOut,
    StaffRejectIn,
    SubmitIn,
    application_out,
    consent_out,
    official_account_out,
)

router = APIRouter(tags=["upgrades"])
holder_router = APIRouter(tags=["account holder"])
staff_router = APIRouter(prefix="/admin", tags=["staff"])

_READ = problem_responses(401, 403, 404, 422)
_WRITE = problem_responses(400, 401, 403, 404, 409, 422)
PAGE_SIZE = 50


def _visible_shop(session, call, shop_id: str, *, lock: bool = False):
    shop = subjects.get_shop(session, shop_id, lock=lock)
    call.require_subject(shop.subject_id, not_found=_l("Shop {shop_id} not found", shop_id=shop_id))
    return shop


def _scope(call) -> str | None:
    """R-62: whose applications the caller sees (visibility.scope_of)."""
    principal = call.principal
    return visibility.scope_of(
        is_staff=principal is not None and principal.is_admin,
        subject_id=principal.subject_id if principal is not None else None,
    )


def _visible_application(session, call, application_id: str, *, lock: bool = False):
    """R-62: the application if the caller's subject submitted it (staff: any); else the same 404 as a missing one."""
    app = service.get_application(session, application_id, lock=lock)
    if not visibility.readable(app, _scope(call)):
        raise errors.NotFound(_l("Application {application_id} not found", application_id=application_id))
    return app


def _visible_subject(session, call, subject_id: str) -> Subject:
    not_found = _l("Subject {subject_id} not found", subject_id=subject_id)
    call.require_subject(subject_id, not_found=not_found)
    subject = session.get(Subject, subject_id)
    if subject is None:
        raise errors.NotFound(not_found)
    return subject


@router.get("/shops/{shop_id}/official-account", response_model=OfficialAccountOut, responses=_READ)
async def get_official_account(shop_id: IdPath, caller: BearerToken) -> Response:
    """The merchant's most read page: authentication, clock and data in one statement, off the thread pool
    (guanhao.upgrades.reads), answered by the same rules and shape as `official_view`. Served by `ReadLane`
    before routing; this route documents it and answers what the lane leaves (an id the path pattern
    refuses: 422)."""
    return Response(await official_account_body(shop_id, caller, ""), media_type="application/json")


async def official_account_body(shop_id: str, caller: Bearer, lang: str) -> bytes:
    row = await reader.one(
        reads.statement(by_key=caller.admin is None, sandbox=get_settings().sandbox),
        reads.params(shop_id=shop_id, token=caller.token, admin=caller.admin, now=clock.real_now()),
    )
    assert row is not None  # the statement is anchored on one row
    return reads.render(reads.view_of(row, get_policy(), reads.principal_of(row, caller.admin), shop_id))


async def application_body(application_id: str, caller: Bearer, lang: str) -> bytes:
    """`GET /upgrade-applications/{id}` in one statement: the key, the clock and the application (R-62 visibility,
    R-15 and R-17 as every read shows them: `application_out`)."""
    row = await reader.one(
        reads.application_statement(by_key=caller.admin is None, sandbox=get_settings().sandbox),
        reads.params(application_id=application_id, token=caller.token, admin=caller.admin, now=clock.real_now()),
    )
    assert row is not None  # the statement is anchored on one row
    app = reads.application_of(row, reads.principal_of(row, caller.admin), application_id)
    return reads.render_application(app, lang, now=row["now"])


class ReadLane:
    """The one-statement reads (`_LANES`) without the router's and the dependency solver's cost: inside the
    access log and the metrics (which see each as its route), outside everything that concerns bodies and
    Idempotency-Key (a GET has neither). The same checks as the route: a token (401), an id of the path
    pattern (else the router answers 422), then the body; refusals as problem+json."""

    def __init__(self, app):
        self.app = app
        self.routes: dict = {}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "GET":
            return await self.app(scope, receive, send)
        lane = _lane_of(get_route_path(scope), scope.get("query_string", b""))
        if lane is None:
            return await self.app(scope, receive, send)
        endpoint, body_of, item_id, query = lane
        route = self.routes.get(endpoint)
        if route is None:
            route = self.routes[endpoint] = _route_of(scope["app"], endpoint)
        scope["route"] = route
        headers = Headers(scope=scope)
        lang = language(headers.get("accept-language"))
        try:
            token = bearer_token(headers.get("authorization"))
            caller = Bearer(token=token, admin=admin_principal(token, admin_token=get_settings().admin_token))
            body = await body_of(item_id, caller, lang, *query)
        except Exception as exc:
            refused = problems.refusal(scope, exc)
            await problems.response(refused, lang)(scope, receive, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _lane_of(path: str, query_string: bytes):
    """The lane serving `path` (its endpoint, its body, the id in the path, the query's arguments to the body), or
    None: the router answers (and refuses what the schema refuses)."""
    for pattern, endpoint, body_of, takes_type in _LANES:
        match = pattern.fullmatch(path)
        if match is not None:
            if not _lane_id(match.group(1)):
                return None
            query: tuple = ()
            if takes_type:
                account_type = _account_type(query_string)
                if account_type is _REFUSED:
                    return None
                query = (account_type,)
            return endpoint, body_of, match.group(1), query
    return None


_REFUSED = object()
_TYPE_NAMES = frozenset(get_args(AccountTypeName))


def _account_type(query_string: bytes):
    """`?account_type=` as the route reads it (the last one given; others ignored), or _REFUSED when the schema
    would refuse it."""
    given = [v for k, v in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True) if k == "account_type"]
    if not given:
        return None
    return given[-1] if given[-1] in _TYPE_NAMES else _REFUSED


def _lane_id(value: str) -> bool:
    return len(value) <= 64 and ID_RE.fullmatch(value) is not None


def _route_of(app, endpoint):
    """The route object the router would put in the scope for `endpoint` (what logs and metrics name)."""
    for context in iter_route_contexts(app.routes):
        if getattr(context.original_route, "endpoint", None) is endpoint:
            return context.original_route
    raise LookupError(f"no route serves {endpoint.__name__}")


@router.get("/shops/{shop_id}/eligibility", response_model=EligibilityOut, responses=_READ)
async def get_eligibility(
    shop_id: IdPath,
    caller: BearerToken,
    request: Request,
    account_type: Annotated[AccountTypeName | None, Query()] = None,
) -> Response:
    """R-04: every check, passed or not, and the type an application would get. One statement off the thread pool
    (see `eligibility_body`); served by `ReadLane` before routing, this route documents it and answers what the
    lane leaves (an id or an account_type the schema refuses: 422)."""
    body = await eligibility_body(shop_id, caller, language(request.headers.get("accept-language")), account_type)
    return Response(body, media_type="application/json")


async def eligibility_body(shop_id: str, caller: Bearer, lang: str, account_type: str | None = None) -> bytes:
    """`service.eligibility` in one statement: the key, the clock and every fact of the shop that R-03 reads."""
    row = await reader.one(
        reads.eligibility_statement(by_key=caller.admin is None, sandbox=get_settings().sandbox),
        reads.params(shop_id=shop_id, token=caller.token, admin=caller.admin, now=clock.real_now()),
    )
    assert row is not None  # the statement is anchored on one row
    principal = reads.principal_of(row, caller.admin)
    checks, resolved = reads.eligibility_of(row, get_policy(), principal, shop_id, account_type=account_type)
    return reads.render_eligibility(checks, resolved, lang)


@router.get("/subjects/{subject_id}/quotas", response_model=QuotasOut, responses=_READ)
async def get_quotas(subject_id: IdPath, caller: BearerToken) -> Response:
    """One statement off the thread pool (see `quotas_body`); served by `ReadLane` before routing, this route
    documents it and answers what the lane leaves (an id the path pattern refuses: 422)."""
    return Response(await quotas_body(subject_id, caller, ""), media_type="application/json")


async def quotas_body(subject_id: str, caller: Bearer, lang: str) -> bytes:
    """`service.subject_quotas` in one statement: the key, the clock, the subject, its followers and its pools."""
    row = await reader.one(
        reads.quotas_statement(by_key=caller.admin is None, sandbox=get_settings().sandbox),
        reads.params(
            subject_id=subject_id,
            **reads.quota_params(subject_id),
            token=caller.token,
            admin=caller.admin,
            now=clock.real_now(),
        ),
    )
    assert row is not None  # the statement is anchored on one row
    principal = reads.principal_of(row, caller.admin)
    return reads.render_quotas(reads.quotas_of(row, get_policy(), principal, subject_id))


class SubjectShopOut(BaseModel):
    shop_id: str
    name: str
    shop_type: str
    status: str
    official_account: OfficialAccountOut


class SubjectShopPage(BaseModel):
    items: list[SubjectShopOut]
    next_cursor: str | None


@router.get("/subjects/{subject_id}/shops", response_model=SubjectShopPage, responses=_READ)
def list_subject_shops(subject_id: IdPath, call: Authenticated, cursor: CursorParam = None):
    """The subject's shops with their official account's upgrade state, in creation order. Each state is
    `official_view`'s, one shop at a time: a page is at most PAGE_SIZE shops."""
    with call.unit() as (session, now):
        _visible_subject(session, call, subject_id)
        after = decode_key_cursor(cursor)
        shops = subjects.shops_of(session, subject_id, after=after, limit=PAGE_SIZE)
        items = [
            {
                "shop_id": shop.id,
                "name": shop.name,
                "shop_type": shop.shop_type,
                "status": shop.status,
                "official_account": official_account_out(
                    service.official_view(session, shop, call.policy, now=now, scope=_scope(call))
                ),
            }
            for shop in shops
        ]
        return {"items": items, "next_cursor": key_feed_cursor(shops, after=after)}


@router.get("/subjects/{subject_id}/upgrade-applications", response_model=ApplicationList, responses=_READ)
def list_subject_applications(subject_id: IdPath, call: Authenticated, cursor: CursorParam = None):
    """Every application the subject submitted (or had made for it), newest first (SPEC R-62)."""
    with call.unit() as (session, now):
        _visible_subject(session, call, subject_id)
        apps = lists.applications_for_subject(session, subject_id, before_seq=decode_cursor(cursor), limit=PAGE_SIZE)
        return {
            "items": [application_out(a, call.lang, now=now) for a in apps],
            "next_cursor": page(apps, limit=PAGE_SIZE, seq_of=lambda a: a.seq),
        }


@router.post("/shops/{shop_id}/upgrade-applications", status_code=201, response_model=ApplicationOut, responses=_WRITE)
def submit_application(shop_id: IdPath, body: SubmitIn, call: Authenticated):
    with call.unit() as (session, now):
        _visible_shop(session, call, shop_id)
        app = service.submit(
            session,
            shop_id,
            call.policy,
            account_type=body.account_type,
            operator=body.operator.person() if body.operator else None,
            agree_terms=body.agree_terms,
            actor=call.actor,
            now=now,
            public_url=get_settings().public_url,
        )
        return application_out(app, call.lang, now=now)


@router.get("/upgrade-applications/{application_id}", response_model=ApplicationOut, responses=_READ)
async def get_application(application_id: IdPath, caller: BearerToken, request: Request) -> Response:
    """One statement off the thread pool (see `application_body`); served by `ReadLane` before routing, this
    route documents it and answers what the lane leaves (an id the path pattern refuses: 422)."""
    lang = language(request.headers.get("accept-language"))
    return Response(await application_body(application_id, caller, lang), media_type="application/json")


@router.get("/shops/{shop_id}/upgrade-applications", response_model=ApplicationList, responses=_READ)
def list_applications(shop_id: IdPath, call: Authenticated, cursor: CursorParam = None):
    with call.unit() as (session, now):
        _visible_shop(session, call, shop_id)
        apps = service.applications_for_shop(
            session, shop_id, scope=_scope(call), before_seq=decode_cursor(cursor), limit=PAGE_SIZE
        )
        return {
            "items": [application_out(a, call.lang, now=now) for a in apps],
            "next_cursor": page(apps, limit=PAGE_SIZE, seq_of=lambda a: a.seq),
        }


@router.post("/upgrade-applications/{application_id}/withdraw", response_model=ApplicationOut, responses=_WRITE)
def withdraw_application(application_id: IdPath, call: Authenticated):
    with call.unit() as (session, now):
        _visible_application(session, call, application_id)
        app = service.withdraw(session, application_id, actor=call.actor, now=now)
        return application_out(app, call.lang, now=now)


# ------------------------------------------------------------------ account holder (capability token)


def _client(request: Request) -> service.Client:
    """Where the holder's answer came from, for its audit row (R-60)."""
    return service.Client(
        address=request.client.host if request.client else None, user_agent=request.headers.get("user-agent")
    )


Token = Annotated[str, Path(min_length=20, max_length=100)]


def _confirmation_out(session, app, policy, lang: str, *, now) -> dict:
    shop = subjects.get_shop(session, app.shop_id)
    subject = session.get(Subject, app.subject_id)
    account = session.get(Account, app.account_id)
    return {
        "application_id": app.id,
        "status": lifecycle.status_at(app, now).value,
        "expires_at": app.confirmation_expires_at,
        "shop": {"shop_id": shop.id, "name": shop.name},
        "subject": {"subject_id": subject.id, "name": subject.name},
        "account": {"account_id": account.id, "nickname": account.nickname},
        "agreement_version": policy.confirmation.agreement_version,
        "what_changes": [m.render(lang) for m in rules.WHAT_CHANGES],
        "what_stays": [m.render(lang) for m in rules.WHAT_STAYS],
    }


@holder_router.get("/confirmations/{token}", response_model=ConfirmationOut, responses=problem_responses(404, 422))
def get_confirmation(token: Token, call: Anonymous):
    with call.unit() as (session, now):
        return _confirmation_out(session, service.by_token(session, token), call.policy, call.lang, now=now)


@holder_router.post(
    "/confirmations/{token}/accept", response_model=ConfirmationOut, responses=problem_responses(404, 409, 422)
)
def accept_confirmation(token: Token, call: Anonymous, request: Request):
    with call.unit() as (session, now):
        app = service.accept(session, token, call.policy, now=now, client=_client(request))
        return _confirmation_out(session, app, call.policy, call.lang, now=now)


@holder_router.post(
    "/confirmations/{token}/decline", response_model=ConfirmationOut, responses=problem_responses(404, 409, 422)
)
def decline_confirmation(token: Token, call: Anonymous, request: Request):
    with call.unit() as (session, now):
        app = service.decline(session, token, call.policy, now=now, client=_client(request))
        return _confirmation_out(session, app, call.policy, call.lang, now=now)


# ------------------------------------------------------------------ staff


def _admin_application_out(session, app, lang: str, *, now) -> dict:
    """R-62: the holder's link is the holder's capability: outside sandbox mode it is absent here (it travels only
    in the SMS to the holder and the `upgrade.confirmation_requested` event); in sandbox mode staff read it to test."""
    out = {
        **application_out(app, lang, now=now),
        "consents": [consent_out(c) for c in service.consents(session, app.id)],
    }
    settings = get_settings()
    if settings.sandbox:
        token = service.confirmation_token(app)
        out["confirmation_url"] = service.confirmation_url(settings.public_url, token) if token else None
    return out


@staff_router.get(
    "/upgrade-applications/{application_id}",
    response_model=AdminApplicationOut,
    response_model_exclude_unset=True,  # confirmation_url: absent outside sandbox mode, not null
    responses=_READ,
)
def admin_get_application(application_id: IdPath, call: Admin):
    with call.unit() as (session, now):
        return _admin_application_out(session, service.get_application(session, application_id), call.lang, now=now)


@staff_router.get("/review-queue", response_model=ApplicationList, responses=_READ)
def review_queue(call: Admin, cursor: CursorParam = None):
    with call.unit() as (session, now):
        after = decode_cursor(cursor)
        apps = service.review_queue(session, after_seq=after, limit=PAGE_SIZE)
        return {
            "items": [application_out(a, call.lang, now=now) for a in apps],
            "next_cursor": feed_cursor(apps, seq_of=lambda a: a.seq, after=after),
        }


@staff_router.post("/upgrade-applications/{application_id}/approve", response_model=ApplicationOut, responses=_WRITE)
def approve(application_id: IdPath, call: Admin, body: Annotated[ApproveIn | None, Body()] = None):
    with call.unit() as (session, now):
        note = body.note if body is not None else None
        app = service.approve(session, application_id, call.policy, actor=call.actor, now=now, note=note)
        return application_out(app, call.lang, now=now)


@staff_router.post("/upgrade-applications/{application_id}/reject", response_model=ApplicationOut, responses=_WRITE)
def reject(application_id: IdPath, body: StaffRejectIn, call: Admin):
    with call.unit() as (session, now):
        app = service.staff_reject(session, application_id, reason=body.reason, actor=call.actor, now=now)
        return application_out(app, call.lang, now=now)


@router.post("/shops/{shop_id}/official-account/cancel-upgrade", response_model=OfficialAccountOut, responses=_WRITE)
def cancel_upgrade(shop_id: IdPath, call: Authenticated):
    """取消升级: an auto upgrade, within the cancel window (SPEC R-12, R-13)."""
    with call.unit() as (session, now):
        shop = _visible_shop(session, call, shop_id)
        service.cancel(session, shop_id, call.policy, actor=call.actor, now=now)
        return official_account_out(service.official_view(session, shop, call.policy, now=now, scope=_scope(call)))


@router.get(
    "/shops/{shop_id}/official-account/ownership-record",
    response_model=OwnershipRecordOut,
    responses=problem_responses(401, 403, 404, 409, 422),
)
def ownership_record(shop_id: IdPath, call: Authenticated):
    """升级凭证: consents, subject, operators, cancels and changes, with a digest checkable against the audit trail."""
    with call.unit() as (session, now):
        _visible_shop(session, call, shop_id)
        return ownership.build(session, shop_id, now=now)


# The reads served before routing: the path, the route's endpoint (what logs and metrics name), the body, whether
# it takes `?account_type=`.
_LANES = (
    (re.compile(r"/api/v1/shops/([^/]+)/official-account"), get_official_account, official_account_body, False),
    (re.compile(r"/api/v1/upgrade-applications/([^/]+)"), get_application, application_body, False),
    (re.compile(r"/api/v1/subjects/([^/]+)/quotas"), get_quotas, quotas_body, False),
    (re.compile(r"/api/v1/shops/([^/]+)/eligibility"), get_eligibility, eligibility_body, True),
)
