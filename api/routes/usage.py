"""Usage: the caller's own (``/v1/usage``) and everyone's for admins (``/admin/usage``, also as CSV). Reports cover
whole UTC days: from ``since``'s day through ``until``'s (default: the last 30 days). Admins also page through the
raw rows (``/admin/usage/logs``)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import AwareDatetime

from api.deps import CurrentPrincipal, SessionDep, admin_principal, current_principal
from api.schemas.usage import CountSource, UsageLogOut, UsageLogPage, UsageStatus
from api.services.usage import logs as usage_logs
from api.services.usage import reports as usage_reports
from api.services.usage.reports import GroupBy

router = APIRouter(tags=["usage"], dependencies=[Depends(current_principal)])


@router.get("/v1/usage")
async def own_usage(principal: CurrentPrincipal, session: SessionDep, since: AwareDatetime | None = None,
                    until: AwareDatetime | None = None, group_by: GroupBy = "day") -> dict[str, Any]:
    days = usage_reports.period(since, until)
    total, rows = await usage_reports.report(session, group_by, days, user_id=principal.user.id)
    return {"since": days[0], "until": days[1], "group_by": group_by, "totals": asdict(total),
            "data": [asdict(row) for row in rows]}


@router.get("/admin/usage", dependencies=[Depends(admin_principal)], response_model=None)
async def admin_usage(session: SessionDep, since: AwareDatetime | None = None, until: AwareDatetime | None = None,
                      group_by: GroupBy = "day", user_id: int | None = None,
                      format: Literal["json", "csv"] = "json") -> dict[str, Any] | Response:  # noqa: A002
    days = usage_reports.period(since, until)
    total, rows = await usage_reports.report(session, group_by, days, user_id=user_id)
    if format == "csv":
        return Response(usage_reports.to_csv(group_by, rows), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="usage-by-{group_by}.csv"'})
    return {"since": days[0], "until": days[1], "group_by": group_by, "totals": asdict(total),
            "data": [asdict(row) for row in rows]}


@router.get("/admin/usage/logs", dependencies=[Depends(admin_principal)])
async def admin_usage_logs(session: SessionDep, offset: Annotated[int, Query(ge=0)] = 0,
                           limit: Annotated[int, Query(ge=1, le=500)] = 50, model: str | None = None,
                           user_id: int | None = None, status: UsageStatus | None = None,
                           count_source: CountSource | None = None, backend: str | None = None,
                           since: AwareDatetime | None = None, until: AwareDatetime | None = None) -> UsageLogPage:
    where = usage_logs.UsageLogFilter(model=model, user_id=user_id, status=status, count_source=count_source,
                                      backend=backend, since=since, until=until)
    rows, total = await usage_logs.list_logs(session, where, offset, limit)
    return UsageLogPage(data=[UsageLogOut.model_validate(row) for row in rows], offset=offset, limit=limit,
                        total=total)
