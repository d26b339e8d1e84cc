"""The admin's weights and bands of the units' ranking (issue 18): the three rates'
weights (adding up to 100) and the bands from best to worst, saved with an audit entry;
a refused form comes back with what was typed and the field named (422).

    GET  /admin/figures, POST             weights and bands (admin)"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse
from starlette.responses import Response

from core.errors import DomainError
from hotline.figures import settings as rate_settings
from web.deps import ClockDep, SessionDep
from web.pages.admin_common import ADMIN
from web.pages.i18n import N_, _
from web.pages.people import Person, client_address, csrf_form
from web.pages.templating import render

router = APIRouter(include_in_schema=False)

SETTINGS_REFUSALS = (
    N_("the weights are missing"),
    N_("a weight is a whole number from 0 to 100"),
    N_("the three weights must add up to 100"),
    N_("at least one band is needed"),
    N_("at most 8 bands"),
    N_("a band is a name and a threshold"),
    N_("a band's name is 1 to 16 characters"),
    N_("two bands have the same name"),
    N_("a threshold is a score from 0 to 100"),
    N_("bands go from best to worst, each threshold below the one before"),
    N_("the last band must start at 0 so that every score has a band"),
)


def _settings_form(chosen: rate_settings.RateSettings) -> dict[str, Any]:
    bands = [{"name": b.name, "at_least": f"{b.at_least:g}"} for b in chosen.bands]
    bands += [{"name": "", "at_least": ""}] * (rate_settings.MAX_BANDS - len(bands))
    return {
        "weights": {
            n: str(getattr(chosen.weights, n)) for n in ("response", "resolution", "satisfaction")
        },
        "bands": bands,
    }


def _admin_page(
    request: Request,
    form: dict[str, Any],
    *,
    errors: dict[str, str] | None = None,
    error: str | None = None,
    status: int = 200,
) -> Response:
    context = {
        "form": form,
        "errors": errors or {},
        "error": error,
        "notice": _("Weights and bands saved: the ranking uses them from now on.")
        if request.query_params.get("done") == "figures_saved"
        else None,
    }
    return render(request, "figures/admin.html", context, status_code=status)


@router.get("/admin/figures")
def admin_figures(request: Request, session: SessionDep, person: Person = ADMIN) -> Response:
    return _admin_page(request, _settings_form(rate_settings.load(session)))


@router.post("/admin/figures", dependencies=[Depends(csrf_form)])
async def save_figures(
    request: Request, session: SessionDep, clock: ClockDep, person: Person = ADMIN
) -> Response:
    data = await request.form()
    weights = {
        n: str(data.get(f"weights.{n}") or "")[:8]
        for n in ("response", "resolution", "satisfaction")
    }
    bands = []
    for i in range(rate_settings.MAX_BANDS):
        name = str(data.get(f"bands.{i}.name") or "").strip()[:64]
        at_least = str(data.get(f"bands.{i}.at_least") or "").strip()[:16]
        if name or at_least:
            bands.append({"name": name, "at_least": at_least})
    value = {"weights": weights, "bands": bands}
    try:
        with session.begin_nested():
            rate_settings.save(
                session,
                value=value,
                now=clock.now(),
                user_id=person.id,
                username=person.user.username,
                address=client_address(request),
            )
    except DomainError as exc:
        errors = {str(exc.details.get("field") or "weights"): _(exc.message)}
        form = {
            "weights": weights,
            "bands": bands
            + [{"name": "", "at_least": ""}] * (rate_settings.MAX_BANDS - len(bands)),
        }
        return _admin_page(request, form, errors=errors, error=_(exc.message), status=422)
    return RedirectResponse("/admin/figures?done=figures_saved", status_code=303)
