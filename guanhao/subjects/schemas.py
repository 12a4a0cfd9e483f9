import datetime as dt
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints

from guanhao.schemas import Bool, NonNegInt, ObjectId, PersonIn, PersonOut, Phone, RequestBody, Score, Text

# A date a licence can plausibly carry: anything outside is a typo or a sentinel, not a validity.
LicenceDate = Annotated[dt.date, Field(ge=dt.date(1900, 1, 1), le=dt.date(2200, 12, 31))]
SubjectType = Literal["enterprise", "individual_business", "personal"]
ShopType = Literal["official_flagship", "flagship", "specialty", "franchise", "enterprise", "individual", "personal"]
ShopStatus = Literal["active", "suspended", "closed"]
AccountStatus = Literal["normal", "restricted", "banned"]


class SubjectIn(RequestBody):
    name: Text
    subject_type: SubjectType
    cross_border: Bool = False
    license_valid_until: LicenceDate | None = Field(default=None, description="null: the licence does not expire")
    license_number: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)] | None = None


class SubjectOut(BaseModel):
    subject_id: str
    name: str
    subject_type: SubjectType
    cross_border: bool
    license_valid_until: dt.date | None
    license_number: str | None
    created_at: dt.datetime
    updated_at: dt.datetime


class ShopIn(RequestBody):
    subject_id: ObjectId
    name: Text
    shop_type: ShopType
    status: ShopStatus
    experience_score: Score


class ShopOut(BaseModel):
    shop_id: str
    subject_id: str
    name: str
    shop_type: ShopType
    status: ShopStatus
    experience_score: float
    official_account_id: str | None
    created_at: dt.datetime
    updated_at: dt.datetime


class AccountIn(RequestBody):
    nickname: Text
    followers: NonNegInt
    following: NonNegInt = 0
    posts: NonNegInt = 0
    status: AccountStatus
    real_name_verified: Bool
    violations_90d: NonNegInt = 0
    login_phone: Phone
    holder: PersonIn


class AccountOut(BaseModel):
    account_id: str
    nickname: str
    followers: int
    following: int
    posts: int
    status: AccountStatus
    real_name_verified: bool
    violations_90d: int
    login_phone: str
    holder: PersonOut
    created_at: dt.datetime
    updated_at: dt.datetime


class BindingIn(RequestBody):
    account_id: ObjectId


class BindingOut(BaseModel):
    shop_id: str
    account_id: str


class ImportRejection(BaseModel):
    line: int
    code: str
    detail: str


class ImportResult(BaseModel):
    accepted: int
    rejected: list[ImportRejection]


class SubjectPage(BaseModel):
    items: list[SubjectOut]
    next_cursor: str | None


class ShopPage(BaseModel):
    items: list[ShopOut]
    next_cursor: str | None


class AccountPage(BaseModel):
    items: list[AccountOut]
    next_cursor: str | None
