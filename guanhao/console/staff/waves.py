"""自动升级批次 (R-11): a dry run first — what a wave would do now, with its skips counted by reason — then start,
live progress (htmx polls the wave's row), stop, and the history. A wave starts through the same calls as
POST /api/v1/admin/auto-upgrade-waves; its pages show what the wave's row says, whoever does the work."""

from fastapi import Query

from guanhao import errors
from guanhao.console import pages
from guanhao.console.session import CurrentVisit, Form
from guanhao.console.staff.common import render, router, staff
from guanhao.console.staff.dashboard import reason_label
from guanhao.i18n import _l
from guanhao.upgrades import waves, waves_api
from guanhao.upgrades.models import WaveState

HISTORY = 30
LIMIT_MOST = 10_000_000
BAD_LIMIT = _l("Enter a whole number of shops, 0 or more")
BAD_SCORE = _l("Enter an experience score between 0 and 5")


def _figures(limit: str | None, min_score: str | None) -> tuple[int | None, float | None, dict]:
    """The form's limit and minimum score, or the errors to show beside them (R-63)."""
    problems: dict = {}
    number = None
    if limit is not None:
        try:
            number = int(limit)
            if not 0 <= number <= LIMIT_MOST:
                raise ValueError
        except ValueError:
            problems["limit"], number = BAD_LIMIT, None
    score = None
    if min_score:
        try:
            score = float(min_score)
            if not 0 <= score <= 5:
                raise ValueError
        except ValueError:
            problems["min_score"], score = BAD_SCORE, None
    return number, score, problems


@router.get("/waves")
def wave_list(
    current: CurrentVisit,
    limit: str | None = Query(default=None, max_length=12),
    min_score: str | None = Query(default=None, max_length=12),
):
    """The form and the history; with a limit given, the dry run of that wave (`waves.simulate`, writes nothing)."""
    staff(current)
    number, score, problems = _figures(limit, min_score)
    dry_run = None
    if number is not None and not problems:
        dry_run = waves.simulate(current.policy, limit=number, min_score=score)
    with current.unit() as (session, _now):
        history = waves.recent(session, limit=HISTORY)
    return render(
        current,
        "staff/waves.html",
        nav="waves",
        status=422 if problems else 200,
        history=history,
        dry_run=dry_run,
        skip_rows=[
            (code, reason_label(code, current.lang), n)
            for code, n in (dry_run.reasons.most_common() if dry_run else [])
        ],
        limit=limit or "",
        min_score=min_score or "",
        limit_value=number,
        score_value=current.policy.auto_upgrade.min_experience_score if score is None else score,
        problems=problems,
    )


@router.post("/waves")
def start(current: CurrentVisit, form: Form):
    """开始升级: `waves.start` (audited, R-60), then the work as the API's POST hands it on."""
    viewer = staff(current)
    number, score, problems = _figures(str(form.get("limit", "")), str(form.get("min_score", "")) or None)
    if number is None or problems:
        current.flash("error", BAD_LIMIT if "limit" in problems or number is None else BAD_SCORE)
        return pages.redirect(current, "/staff/waves")
    with current.unit() as (session, now):
        wave = waves.start(session, limit=number, min_score=score, policy=current.policy, actor=viewer.actor, now=now)
        wave_id = wave.id
    waves_api._run_in_background(wave_id, current.policy)
    current.flash("success", _l("Wave {wave_id} started", wave_id=wave_id))
    return pages.redirect(current, f"/staff/waves/{wave_id}")


def _wave_context(current, wave_id: str) -> dict:
    with current.unit() as (session, _now):
        wave = waves.get(session, wave_id)
        session.expunge(wave)
    reasons = sorted(wave.skip_reasons.items(), key=lambda kv: -kv[1])
    return {
        "wave": wave,
        "running": wave.status == WaveState.RUNNING,
        "skip_rows": [(code, reason_label(code, current.lang), n) for code, n in reasons],
    }


@router.get("/waves/{wave_id}")
def wave_page(wave_id: str, current: CurrentVisit):
    staff(current)
    return render(current, "staff/wave.html", nav="waves", **_wave_context(current, wave_id))


@router.get("/waves/{wave_id}/live")
def wave_live(wave_id: str, current: CurrentVisit):
    """The progress, polled while the wave runs; once it does not, the answer stops the polling."""
    staff(current)
    return pages.fragment(current, "staff/_wave_live.html", **_wave_context(current, wave_id))


@router.get("/waves/{wave_id}/cancel")
def cancel_page(wave_id: str, current: CurrentVisit):
    staff(current)
    return render(current, "staff/wave_cancel.html", nav="waves", **_wave_context(current, wave_id))


@router.post("/waves/{wave_id}/cancel")
def cancel(wave_id: str, current: CurrentVisit, form: Form):
    """终止: the chunk in hand finishes, no new one starts; what the wave upgraded stays (R-11)."""
    viewer = staff(current)
    try:
        with current.unit() as (session, now):
            waves.cancel(session, wave_id, actor=viewer.actor, now=now)
    except errors.InvalidTransition as exc:
        current.flash("warning", exc.detail)
        return pages.redirect(current, f"/staff/waves/{wave_id}")
    current.flash("success", _l("The wave was stopped; what it upgraded stays upgraded"))
    return pages.redirect(current, f"/staff/waves/{wave_id}")
