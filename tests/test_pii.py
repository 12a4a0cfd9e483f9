"""Personal data (SPEC R-50): GB 11643 ID numbers, mainland mobiles, masking, encryption, blind index."""

import datetime as dt

import pytest
from cryptography.exceptions import InvalidTag
from hypothesis import given
from hypothesis import strategies as st

from guanhao import pii
from guanhao.pii import id_check_char

KEY_A = b"a" * 32
KEY_B = b"b" * 32


def _with_check(first17: str) -> str:
    return first17 + id_check_char(first17)


# ---------------------------------------------------------------- ID numbers (GB 11643-1999)


@pytest.mark.parametrize(
    "number",
    [
        "11010519491231002X",  # the standard's own example, X check character
        _with_check("11010519900307001"),
        _with_check("44030419800229123"),  # 29 Feb of a leap year
    ],
)
def test_r50_valid_id_numbers_are_accepted(number):
    assert pii.normalize_id_number(number) == number


def test_r50_lowercase_x_check_character_is_normalized():
    assert pii.normalize_id_number("11010519491231002x") == "11010519491231002X"


def test_r50_x_check_char_is_computed_where_the_sum_says_so():
    # 1101051949123100 + 2 → check X (the standard's example)
    assert id_check_char("11010519491231002") == "X"


def test_r50_wrong_check_digit_is_refused():
    good = _with_check("11010519900307001")
    bad = good[:17] + ("8" if good[17] != "8" else "7")
    with pytest.raises(pii.InvalidIdNumber):
        pii.normalize_id_number(bad)


@pytest.mark.parametrize("born", ["19900230", "19900431", "19901301", "19000229", "19900000"])
def test_r50_impossible_birth_date_is_refused(born):
    with pytest.raises(pii.InvalidIdNumber):
        pii.normalize_id_number(_with_check(f"110105{born}001"))


def test_r50_future_birth_date_is_refused():
    future = dt.date.today() + dt.timedelta(days=400)
    with pytest.raises(pii.InvalidIdNumber):
        pii.normalize_id_number(_with_check(f"110105{future:%Y%m%d}001"))


@pytest.mark.parametrize(
    "number",
    ["", "11010519491231002", "11010519491231002X1", "110105490101001", "1101051949123100XX", "11010519491231A02X"],
)
def test_r50_wrong_length_or_characters_are_refused(number):
    with pytest.raises(pii.InvalidIdNumber):
        pii.normalize_id_number(number)


@given(
    area=st.integers(min_value=110000, max_value=659999),
    born=st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date.today()),
    seq=st.integers(min_value=0, max_value=999),
)
def test_r50_property_any_17_digits_with_valid_date_and_computed_check_validate(area, born, seq):
    first17 = f"{area:06d}{born:%Y%m%d}{seq:03d}"
    number = first17 + id_check_char(first17)
    assert pii.normalize_id_number(number) == number


@given(first17=st.from_regex(r"\A[0-9]{17}\Z"))
def test_r50_property_only_the_computed_check_char_validates(first17):
    good = id_check_char(first17)
    for other in "0123456789X":
        if other == good:
            continue
        with pytest.raises(pii.InvalidIdNumber):
            pii.normalize_id_number(first17 + other)


def test_r50_non_ascii_digits_are_refused():
    fullwidth = _with_check("11010519900307001").translate(str.maketrans("0123456789", "０１２３４５６７８９"))
    with pytest.raises(pii.InvalidIdNumber):
        pii.normalize_id_number(fullwidth)


# ---------------------------------------------------------------- mobile numbers


@pytest.mark.parametrize(
    "raw, normalized",
    [
        ("13800138000", "13800138000"),
        ("+8613800138000", "13800138000"),
        ("+86 138 0013 8000", "13800138000"),
        ("8613800138000", "13800138000"),
        ("19912345678", "19912345678"),
    ],
)
def test_r50_valid_phones_are_normalized(raw, normalized):
    assert pii.normalize_phone(raw) == normalized


@pytest.mark.parametrize(
    "raw",
    [
        "138001380001",
        "1380013800",
        "12800138000",
        "１３８００１３８０００",
        "10800138000",
        "23800138000",
        "1380013800a",
        "",
        "+1 13800138000",
    ],
)
def test_r50_bad_phones_are_refused(raw):
    with pytest.raises(pii.InvalidPhone):
        pii.normalize_phone(raw)


# ---------------------------------------------------------------- masking (API.md)


def test_r50_masks_are_exactly_as_api_md():
    assert pii.mask_id_number("110105199003071234") == "110***********1234"
    assert pii.mask_phone("13812345678") == "138****5678"
    assert pii.mask_name("张三") == "张*"
    assert pii.mask_name("欧阳娜娜") == "欧***"
    assert pii.mask_name("张") == "张*"


def test_r50_person_masked_hides_every_field():
    person = pii.Person(name="张三丰", id_number="11010519491231002X", phone="13812345678")
    assert person.masked() == {"name": "张**", "id_number": "110***********002X", "phone": "138****5678"}


# ---------------------------------------------------------------- vault


def test_r50_aes_gcm_roundtrip():
    vault = pii.Vault(KEY_A, KEY_B)
    sealed = vault.encrypt("11010519491231002X", context="person")
    assert "11010519491231002X" not in sealed
    assert vault.decrypt(sealed, context="person") == "11010519491231002X"
    assert vault.encrypt(None, context="person") is None


def test_r50_ciphertext_differs_per_call():
    vault = pii.Vault(KEY_A, KEY_B)
    assert vault.encrypt("13812345678", context="person") != vault.encrypt("13812345678", context="person")


def test_r50_ciphertext_is_bound_to_its_context():
    vault = pii.Vault(KEY_A, KEY_B)
    sealed = vault.encrypt("13812345678", context="person")
    with pytest.raises(InvalidTag):
        vault.decrypt(sealed, context="login_phone")


def test_r50_ciphertext_does_not_open_under_another_key():
    sealed = pii.Vault(KEY_A, KEY_B).encrypt("13812345678", context="person")
    with pytest.raises(InvalidTag):
        pii.Vault(KEY_B, KEY_B).decrypt(sealed, context="person")


def test_r50_blind_index_is_stable_and_keyed():
    one = pii.Vault(KEY_A, KEY_A)
    same_key = pii.Vault(KEY_B, KEY_A)
    other_key = pii.Vault(KEY_A, KEY_B)
    h = one.blind_index("11010519491231002X", kind="id_number")
    assert h == one.blind_index("11010519491231002X", kind="id_number")
    assert h == same_key.blind_index("11010519491231002X", kind="id_number")
    assert h != other_key.blind_index("11010519491231002X", kind="id_number")
    assert h != one.blind_index("11010519491231003X", kind="id_number")
    assert h != one.blind_index("11010519491231002X", kind="phone")
    assert "11010519491231002X" not in h
