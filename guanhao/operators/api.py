import datetime as dt
from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, Field

from guanhao import pii
from guanhao.http import Authenticated
from guanhao.i18n import _l
from guanhao.operators import service
from guanhao.schemas import IdPath, PersonIn, PersonOut, Phone, RequestBody, problem_responses
from guanhao.subjects import service as subjects

router = APIRouter(prefix="/shops/{shop_id}/official-account", tags=["operators (运营人管理)"])
_WRITE = problem_responses(400, 401, 403, 404, 409, 422, 429)


class CodeIn(RequestBody):
    code: Annotated[str, Field(pattern=r"^\d{6}$", description="the 6-digit SMS code")]


class PhoneRebindIn(RequestBody):
    new_phone: Phone


class ChangeOut(BaseModel):
    change_id: str
    expires_at: dt.datetime
    phone: str = Field(description="the (masked) phone the code was sent to")


class RebindOut(BaseModel):
    rebind_id: str
    expires_at: dt.datetime
    phone: str


class OperatorChanged(BaseModel):
    change_id: str
    shop_id: str
    account_id: str
    operator: PersonOut


class PhoneChanged(BaseModel):
    rebind_id: str
    shop_id: str
    account_id: str
    login_phone: str


def _shop(session, call, shop_id: str):
    shop = subjects.get_shop(session, shop_id)
    call.require_subject(shop.subject_id, not_found=_l("Shop {shop_id} not found", shop_id=shop_id))
    return shop


@router.post("/operator-changes", status_code=201, response_model=ChangeOut, responses=_WRITE)
def request_operator_change(shop_id: IdPath, body: PersonIn, call: Authenticated):
    """更换运营人: sends a 6-digit code to the new operator's phone."""
    with call.unit() as (session, now):
        _shop(session, call, shop_id)
        change = service.request_operator_change(
            session, shop_id, body.person(), call.policy, actor=call.actor, now=now
        )
        return {"change_id": change.id, "expires_at": change.expires_at, "phone": pii.mask_phone(body.phone)}


def _verify(call, shop_id: str, change_id: str, code: str, kind: str, render) -> dict:
    """Checks the code; a wrong try is counted and committed before the refusal is raised."""
    with call.unit() as (session, now):
        _shop(session, call, shop_id)
        result = service.verify(session, shop_id, change_id, code, kind, call.policy, actor=call.actor, now=now)
        error = result.error
        if error is None:
            return render(session, service.official(session, shop_id))
    raise error


@router.post("/operator-changes/{change_id}/verify", response_model=OperatorChanged, responses=_WRITE)
def verify_operator_change(shop_id: IdPath, change_id: IdPath, body: CodeIn, call: Authenticated):
    return _verify(
        call,
        shop_id,
        change_id,
        body.code,
        "operator",
        lambda session, record: {
            "change_id": change_id,
            "shop_id": shop_id,
            "account_id": record.account_id,
            "operator": service.operator_view(record),
        },
    )


@router.post("/phone-rebinds", status_code=201, response_model=RebindOut, responses=_WRITE)
def request_phone_rebind(shop_id: IdPath, body: PhoneRebindIn, call: Authenticated):
    """登录手机号换绑: sends a 6-digit code to the new login phone."""
    with call.unit() as (session, now):
        _shop(session, call, shop_id)
        change = service.request_phone_rebind(session, shop_id, body.new_phone, call.policy, actor=call.actor, now=now)
        return {"rebind_id": change.id, "expires_at": change.expires_at, "phone": pii.mask_phone(body.new_phone)}


@router.post("/phone-rebinds/{rebind_id}/verify", response_model=PhoneChanged, responses=_WRITE)
def verify_phone_rebind(shop_id: IdPath, rebind_id: IdPath, body: CodeIn, call: Authenticated):
    def render(session, record) -> dict:
        account = subjects.get_account(session, record.account_id)
        phone = pii.vault().decrypt(account.login_phone_enc, context="login_phone")
        return {
            "rebind_id": rebind_id,
            "shop_id": shop_id,
            "account_id": record.account_id,
            "login_phone": pii.mask_phone(phone),
        }

    return _verify(call, shop_id, rebind_id, body.code, "login_phone", render)
