from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from guanhao import pii
from guanhao.http import Admin
from guanhao.schemas import IdPath, problem_responses
from guanhao.subjects import service
from guanhao.subjects.models import Account, Shop, Subject
from guanhao.subjects.schemas import (
    AccountIn,
    AccountOut,
    BindingIn,
    BindingOut,
    ImportResult,
    ShopIn,
    ShopOut,
    SubjectIn,
    SubjectOut,
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
    body = await request.body()

    def work() -> dict:
        with call.unit() as (session, now):
            result = service.import_lines(session, body.splitlines(), actor=call.actor, now=now)
        return {
            "accepted": result.accepted,
            "rejected": [
                {"line": line, "code": exc.code, "detail": exc.detail.render(call.lang)}
                for line, exc in result.rejected
            ],
        }

    return await run_in_threadpool(work)
