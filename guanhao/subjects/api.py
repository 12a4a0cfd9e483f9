import asyncio

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from guanhao import bodies, errors, pii
from guanhao.http import Admin, CursorParam, decode_key_cursor, key_feed_cursor
from guanhao.i18n import _l
from guanhao.schemas import IdPath, problem_responses
from guanhao.settings import get_settings
from guanhao.subjects import bulk, service
from guanhao.subjects.models import Account, Shop, Subject
from guanhao.subjects.schemas import (
    AccountIn,
    AccountOut,
    AccountPage,
    BindingIn,
    BindingOut,
    ImportResult,
    ShopIn,
    ShopOut,
    ShopPage,
    SubjectIn,
    SubjectOut,
    SubjectPage,
)

router = APIRouter(tags=["platform sync"])
_WRITE = problem_responses(400, 401, 403, 404, 409, 422)


def subject_out(s: Subject) -> dict:
    return {
        "subject_id": s.id,
        "name": s.name,
        "subject_type": s.subject_type,
        "cross_border": s.cross_border,
        "license_valid_until": s.license_valid_until,
        "license_number": s.license_number,
        "created_at": s.created_at,
        "updated_at": s.updated_at,
    }


def shop_out(s: Shop) -> dict:
    return {
        "shop_id": s.id,
        "subject_id": s.subject_id,
        "name": s.name,
        "shop_type": s.shop_type,
        "status": s.status,
        "experience_score": s.experience_score,
        "official_account_id": s.official_account_id,
        "created_at": s.created_at,
        "updated_at": s.updated_at,
    }


def account_out(a: Account) -> dict:
    v = pii.vault()
    holder = pii.open_person(a.holder_name_enc, a.holder_id_number_enc, a.holder_phone_enc, context="person")
    return {
        "account_id": a.id,
        "nickname": a.nickname,
        "followers": a.followers,
        "following": a.following,
        "posts": a.posts,
        "status": a.status,
        "real_name_verified": a.real_name_verified,
        "violations_90d": a.violations_90d,
        "login_phone": pii.mask_phone(v.decrypt(a.login_phone_enc, context="login_phone")),
        "holder": holder.masked(),
        "created_at": a.created_at,
        "updated_at": a.updated_at,
    }


@router.put("/subjects/{subject_id}", response_model=SubjectOut, responses={201: {"model": SubjectOut}, **_WRITE})
def put_subject(subject_id: IdPath, body: SubjectIn, call: Admin, response: Response):
    with call.unit() as (session, now):
        subject, created = service.put_subject(session, subject_id, body, actor=call.actor, now=now)
        response.status_code = 201 if created else 200
        return subject_out(subject)


@router.put("/shops/{shop_id}", response_model=ShopOut, responses={201: {"model": ShopOut}, **_WRITE})
def put_shop(shop_id: IdPath, body: ShopIn, call: Admin, response: Response):
    with call.unit() as (session, now):
        shop, created = service.put_shop(session, shop_id, body, actor=call.actor, now=now)
        response.status_code = 201 if created else 200
        return shop_out(shop)


@router.put("/accounts/{account_id}", response_model=AccountOut, responses={201: {"model": AccountOut}, **_WRITE})
def put_account(account_id: IdPath, body: AccountIn, call: Admin, response: Response):
    with call.unit() as (session, now):
        account, created = service.put_account(session, account_id, body, actor=call.actor, now=now)
        response.status_code = 201 if created else 200
        return account_out(account)


@router.put("/shops/{shop_id}/official-account", response_model=BindingOut, responses=_WRITE)
def put_binding(shop_id: IdPath, body: BindingIn, call: Admin):
    with call.unit() as (session, now):
        shop = service.bind(session, shop_id, body, actor=call.actor, now=now)
        return {"shop_id": shop.id, "account_id": shop.official_account_id}


@router.post(
    "/import",
    response_model=ImportResult,
    responses=_WRITE,
    openapi_extra={
        "requestBody": {
            # An empty body is zero lines: accepted, nothing imported.
            "required": False,
            "content": {
                "application/x-ndjson": {"schema": {"type": "string", "description": "one JSON object a line"}}
            },
        }
    },
)
async def bulk_import(request: Request, call: Admin):
    """Read as a stream: each line is parsed as it arrives, and every `import_batch_lines` lines (or
    `max_body_bytes` bytes) are committed, so a long import neither holds its body nor keeps other writers
    waiting. The result counts every line exactly. Past the size limit the import stops with 413; the
    batches committed before stand."""
    settings = get_settings()
    result = service.ImportResult()
    batch: list[tuple[int, bytes | None]] = []

    def commit(parsed: bulk.Parsed) -> None:
        with call.unit() as (session, now):
            part = bulk.import_parsed(session, parsed, actor=call.actor, now=now)
        result.add(part)

    # A batch is parsed and validated as soon as it is full, then written while the next one is read and parsed:
    # one write at a time, in line order (each awaited before the next starts).
    writing: asyncio.Future | None = None

    async def hand_over(lines: list[tuple[int, bytes | None]]) -> None:
        nonlocal writing
        parsed = await run_in_threadpool(bulk.parse, lines)
        if writing is not None:
            await writing
        writing = asyncio.ensure_future(run_in_threadpool(commit, parsed))

    held = 0
    try:
        try:
            async for number, line in bodies.ndjson_lines(request.stream(), max_line=settings.max_body_bytes):
                batch.append((number, line))
                held += len(line or b"")
                # A batch is bounded in lines (the lock it holds) and in bytes (the memory it holds).
                if len(batch) >= settings.import_batch_lines or held >= settings.max_body_bytes:
                    await hand_over(batch)
                    batch, held = [], 0
        except errors.PayloadTooLarge as exc:
            if writing is not None:
                await writing
            raise errors.PayloadTooLarge(
                _l(
                    "The body may have at most {limit} bytes; the {accepted} lines accepted before the limit are kept",
                    limit=exc.extra.get("limit"),
                    accepted=result.accepted,
                ),
                limit=exc.extra.get("limit"),
                accepted=result.accepted,
            ) from None
        if batch:
            await hand_over(batch)
        if writing is not None:
            await writing
    finally:
        # Whatever stopped the request (the client gone), the batch being written ends before the answer does.
        if writing is not None and not writing.done():
            await asyncio.wait([writing])
    return {
        "accepted": result.accepted,
        "rejected": [
            {"line": line, "code": exc.code, "detail": exc.detail.render(call.lang)} for line, exc in result.rejected
        ],
    }


# ---------------------------------------------------------------- reading back what was synced (admin)

PAGE_SIZE = 50
_READ = problem_responses(401, 403, 404, 422)


@router.get("/subjects", response_model=SubjectPage, responses=_READ)
def list_subjects(call: Admin, cursor: CursorParam = None):
    with call.unit() as (session, _now):
        after = decode_key_cursor(cursor)
        rows = service.page_of(session, Subject, after=after, limit=PAGE_SIZE)
        return {"items": [subject_out(r) for r in rows], "next_cursor": key_feed_cursor(rows, after=after)}


@router.get("/subjects/{subject_id}", response_model=SubjectOut, responses=_READ)
def get_subject(subject_id: IdPath, call: Admin):
    with call.unit() as (session, _now):
        return subject_out(service.get_subject(session, subject_id))


@router.get("/shops", response_model=ShopPage, responses=_READ)
def list_shops(call: Admin, cursor: CursorParam = None):
    with call.unit() as (session, _now):
        after = decode_key_cursor(cursor)
        rows = service.page_of(session, Shop, after=after, limit=PAGE_SIZE)
        return {"items": [shop_out(r) for r in rows], "next_cursor": key_feed_cursor(rows, after=after)}


@router.get("/shops/{shop_id}", response_model=ShopOut, responses=_READ)
def get_shop(shop_id: IdPath, call: Admin):
    with call.unit() as (session, _now):
        return shop_out(service.get_shop(session, shop_id))


@router.get("/accounts", response_model=AccountPage, responses=_READ)
def list_accounts(call: Admin, cursor: CursorParam = None):
    """Personal data masked (SPEC R-50)."""
    with call.unit() as (session, _now):
        after = decode_key_cursor(cursor)
        rows = service.page_of(session, Account, after=after, limit=PAGE_SIZE)
        return {"items": [account_out(r) for r in rows], "next_cursor": key_feed_cursor(rows, after=after)}


@router.get("/accounts/{account_id}", response_model=AccountOut, responses=_READ)
def get_account(account_id: IdPath, call: Admin):
    """Personal data masked (SPEC R-50)."""
    with call.unit() as (session, _now):
        return account_out(service.get_account(session, account_id))
