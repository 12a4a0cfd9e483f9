"""The one message catalog: every sentence marked in the code has a translation in both languages."""

import io
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from guanhao import i18n

ROOT = Path(__file__).resolve().parent.parent


def _extracted() -> set[str]:
    method_map = [("guanhao/**.py", "python"), ("guanhao/**/templates/**.html", "jinja2")]
    options = {"guanhao/**/templates/**.html": {"extensions": "jinja2.ext.i18n"}}
    found = extract_from_dir(ROOT, method_map, options, keywords={"_l": None, "_": None, "gettext": None})
    return {message if isinstance(message, str) else message[0] for _, _, message, _, _ in found}


def _catalog(locale: str):
    path = i18n.LOCALE_DIR / locale / "LC_MESSAGES" / "messages.po"
    return read_po(io.BytesIO(path.read_bytes()), locale=locale)


@pytest.mark.parametrize("locale", sorted(i18n.LANGUAGES.values()))
def test_every_message_in_the_code_has_a_translation(locale):
    catalog = _catalog(locale)
    translated = {m.id for m in catalog if m.id and m.string and not m.fuzzy}
    missing = sorted(_extracted() - translated)
    assert not missing, f"{locale}: run `make messages` and translate: {missing}"


@pytest.mark.parametrize("locale", sorted(i18n.LANGUAGES.values()))
def test_the_catalog_holds_no_stale_message(locale):
    stale = sorted({m.id for m in _catalog(locale) if m.id} - _extracted())
    assert not stale, f"{locale}: no longer in the code (run `make messages`): {stale}"


def test_placeholders_survive_translation():
    for locale in i18n.LANGUAGES.values():
        for m in _catalog(locale):
            if m.id and "{" in m.id:
                names = sorted(p.split("}")[0] for p in m.id.split("{")[1:])
                assert sorted(p.split("}")[0] for p in m.string.split("{")[1:]) == names, (locale, m.id)


def test_messages_render_in_both_languages():
    msg = i18n._l("Shop {shop_id} not found", shop_id="shop-1")
    assert msg.render("en") == "Shop shop-1 not found"
    assert msg.render("zh-CN") == "未找到店铺 shop-1"
