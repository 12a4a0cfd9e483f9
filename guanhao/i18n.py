"""One message catalog per language: every sentence a user reads comes from here.

Sentences are written in English in the code and marked with `_l` (a `Message`, rendered later in
the reader's language: the API's Accept-Language, the console's language switch). `pybabel
extract` (`make messages`) collects them into `guanhao/locale/messages.pot`; each language has
one `messages.po` a translator can work on, compiled in memory the first time it is needed.
A message id without a translation in either language fails the test suite.
"""

import io
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations

LOCALE_DIR = Path(__file__).with_name("locale")
DOMAIN = "messages"
DEFAULT = "zh-CN"
# The language tags the service speaks, and their locale directories.
LANGUAGES = {"zh-CN": "zh_CN", "en": "en"}


@dataclass(frozen=True, slots=True)
class Message:
    """A sentence of the catalog with its parameters, not yet in any language."""

    msgid: str
    params: tuple[tuple[str, Any], ...] = ()

    def render(self, lang: str) -> str:
        text = gettext(self.msgid, lang)
        if not self.params:
            return text
        return text.format(**{k: v.render(lang) if isinstance(v, Message) else v for k, v in self.params})

    def __str__(self) -> str:
        return self.render("en")


def _l(msgid: str, **params: Any) -> Message:
    """Marks a sentence for the catalog (`pybabel extract -k _l`); `{name}` placeholders take `params`."""
    return Message(msgid, tuple(params.items()))


@cache
def translations(lang: str) -> Translations:
    """The compiled catalog of a language (`zh-CN` or `en`), for gettext calls and Jinja's i18n extension."""
    locale = LANGUAGES[lang if lang in LANGUAGES else DEFAULT]
    with (LOCALE_DIR / locale / "LC_MESSAGES" / f"{DOMAIN}.po").open("rb") as fh:
        catalog = read_po(fh, locale=locale, domain=DOMAIN)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)  # fuzzy entries are left out, as msgfmt does
    compiled.seek(0)
    return Translations(compiled, domain=DOMAIN)


def gettext(msgid: str, lang: str) -> str:
    return translations(lang).gettext(msgid)


def ngettext(singular: str, plural: str, n: int, lang: str) -> str:
    return translations(lang).ngettext(singular, plural, n)


def render(value: "Message | str | None", lang: str) -> str | None:
    """A Message in `lang`; plain text (a staff member's reason, a nickname) as it is."""
    if isinstance(value, Message):
        return value.render(lang)
    return value


def language(accept_language: str | None) -> str:
    """`en` or `zh-CN` (the default), by the first preference of an Accept-Language header that names either."""
    if not accept_language:
        return DEFAULT
    prefs = []
    for i, part in enumerate(accept_language.split(",")):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        prefs.append((-q, i, tag.strip().lower()))
    for _, _, tag in sorted(prefs):
        if tag.startswith("en"):
            return "en"
        if tag.startswith("zh") or tag == "*":
            return DEFAULT
    return DEFAULT
