"""The text check's fast path (guanhao.schemas._COMMON_TEXT) lets through only code points the full check lets
through: every code point of its ranges is walked (R-63)."""

import sys

from guanhao import schemas


def test_every_code_point_the_fast_path_accepts_is_accepted_by_the_full_check():
    accepted = [chr(cp) for cp in range(sys.maxunicode + 1) if schemas._COMMON_TEXT.fullmatch(chr(cp))]
    assert len(accepted) > 20_000
    for ch in accepted:
        # "a" + ch is not ASCII when ch is not: the walk code point by code point, without the fast path.
        walked = next((c for c in "é" + ch if c not in schemas._FREE_TEXT_CONTROLS and schemas._refused_alone(c)), None)
        assert walked is None, f"U+{ord(ch):04X}"


def test_refused_code_points_are_still_found_beside_common_text():
    assert schemas.refused_character("杭州\u202e公司") == "U+202E"
    assert schemas.refused_character("杭州\u200b公司") == "U+200B"
    assert schemas.refused_character("杭州\ufeff") == "U+FEFF"
    assert schemas.refused_character("杭州\x85") == "U+0085"
    assert schemas.refused_character("杭州科技，有限公司（新）") is None
