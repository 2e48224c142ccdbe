"""HTML pages of the transparency register, from Jinja2 templates with autoescaping.

Every value from the audit log is user text as far as this module is concerned
(a purpose, a title, even a department name in a tampered log), and the
templates (``headcount/register/templates/``) are rendered with autoescaping on,
so it reaches a page only escaped. Markup the templates write themselves comes
from macros. No script, no external resource: the Content-Security-Policy in
every page (and in the server's headers) allows only the one stylesheet
(``register.css``, inlined), by its hash.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from collections.abc import Mapping
from importlib import resources
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from headcount.privacy.noise import guessing_bound
from headcount.protect.labels import WITHHELD, StatusLabel, status_label
from headcount.protect.sdc import PRIMARY, RELEASED, SECONDARY
from headcount.register.events import describe_spec, event_page, view_event
from headcount.register.model import (
    ABORTED,
    APPROVED,
    AWAITING,
    EPOCH_ABORTED,
    EPOCH_COMPLETED,
    EXPIRED,
    NO_OUTCOME,
    REFUSED,
    REVOKED,
    Query,
    Register,
    Table,
)
from headcount.register.model import (
    RELEASED as QUERY_RELEASED,
)

INDEX = "index.html"
EVENTS = "events.html"

_CSS = (resources.files("headcount.register") / "templates" / "register.css").read_text("utf-8")
_STYLE_HASH = base64.b64encode(hashlib.sha256(_CSS.encode("utf-8")).digest()).decode("ascii")

# Allows the one stylesheet above and nothing else: no script, no fetch, no frame.
# (data: images only for the empty favicon, which saves a request per page.)
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'none'"
)

_PROJECT_BADGE = {APPROVED: "ok", AWAITING: "wait", EXPIRED: "muted", REVOKED: "bad"}
_QUERY_BADGE = {QUERY_RELEASED: "ok", REFUSED: "bad", ABORTED: "wait", NO_OUTCOME: "muted"}
_EPOCH_BADGE = {EPOCH_COMPLETED: "ok", EPOCH_ABORTED: "bad"}
_KIND_TITLES = {
    "ceremony": "Key ceremony",
    "epoch_started": "Linkage epoch started",
    "epoch": "Linkage epoch completed",
    "epoch_aborted": "Linkage epoch aborted",
    "project_proposed": "Project proposed",
    "project_approved": "Project approved",
    "project_revoked": "Project revoked",
    "query": "Query announced",
    "release": "Table released",
    "refusal": "Query refused",
    "query_aborted": "Query aborted",
}


def _eps(value: float | None) -> str:
    return "—" if value is None else f"{value:.3g}"


def _when(at: str) -> str:
    """An audit time (UTC ISO-8601) to the second, for reading."""
    return at[:19].replace("T", " ") if at else "—"


def _short(identifier: str, n: int = 12) -> str:
    return identifier[:n] + ("…" if len(identifier) > n else "")


def _fmt(value: float, spec: str) -> str:
    return format(value, spec)


def _interval(pair: tuple[float, float] | None, spec: str) -> str:
    return "—" if pair is None else f"{pair[0]:{spec}} – {pair[1]:{spec}}"


def _sizes(records: Mapping[str, int]) -> str:
    return "; ".join(f"{p}: {n:,}" for p, n in sorted(records.items())) or "—"


def _budgets(left: Mapping[str, float]) -> str:
    return ", ".join(f"{p}: {v:.3g}" for p, v in sorted(left.items())) or "—"


def _group_label(spec: Mapping[str, Any]) -> str:
    group_by = spec.get("group_by")
    return group_by if isinstance(group_by, str) and group_by else "Group"


def total_status(table: Table) -> str:
    """The status of a table's grand total. The log records only whether it was
    withheld: a one-way table's total is withheld only as a small number (the
    rule withholds cells before a margin, and a lone withheld cell takes the
    total with it only when that cell is the whole table); a two-way table's
    may also protect another entry, so its rule is not named."""
    if table.total is not None:
        return RELEASED
    return PRIMARY if not table.column_attribute else WITHHELD


@functools.cache
def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("headcount.register", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=False,
        keep_trailing_newline=True,
    )
    env.filters.update(
        eps=_eps,
        when=_when,
        short=_short,
        fmt=_fmt,
        interval=_interval,
        sizes=_sizes,
        budgets=_budgets,
    )
    env.globals.update(
        INDEX=INDEX,
        EVENTS=EVENTS,
        REFUSED=REFUSED,
        ABORTED=ABORTED,
        project_badge=_PROJECT_BADGE,
        query_badge=_QUERY_BADGE,
        epoch_badge=_EPOCH_BADGE,
        kind_titles=_KIND_TITLES,
        guessing_bound=guessing_bound,
        event_page=event_page,
        group_label=_group_label,
        total_status=total_status,
        statuses=(RELEASED, PRIMARY, SECONDARY),
        csp=CONTENT_SECURITY_POLICY,
        css=Markup(_CSS),  # our own file, hashed into the CSP: inlined verbatim
    )
    return env


def _render(template: str, reg: Register, title: str, lede: str = "", **context: Any) -> str:
    def label(status: str) -> StatusLabel:
        return status_label(status, reg.policy)

    page = _environment().get_template(template)
    return page.render(reg=reg, title=title, lede=lede, label=label, **context)


def render_index(reg: Register) -> str:
    return _render(
        "index.html",
        reg,
        "Transparency register",
        "Every project, linkage epoch and query of this federation, with its stated "
        "purpose, the privacy budget each department has spent and every table released — "
        "read from the federation's signed, hash-chained audit log.",
        released=sum(q.status == QUERY_RELEASED for q in reg.queries),
    )


def render_query(reg: Register, q: Query) -> str:
    title = q.spec.get("title")
    return _render(
        "query.html",
        reg,
        f"Query #{q.seq}",
        title if isinstance(title, str) else "",
        q=q,
        asked=describe_spec(q.spec),
    )


def render_events(reg: Register) -> str:
    return _render(
        "events.html",
        reg,
        "Full audit log",
        "Every event in order. Each event's hash covers its content and the previous "
        "event's hash, and the coordinator signs it with the federation's audit key.",
        views=[view_event(reg, e) for e in reg.events],
    )


def render_event(reg: Register, index: int) -> str:
    """The page of ``reg.events[index]``, with links to its neighbours."""
    event = reg.events[index]
    view = view_event(reg, event)
    return _render(
        "event.html",
        reg,
        f"Event #{event.seq}: {_KIND_TITLES.get(event.kind, event.kind)}",
        view.summary,
        v=view,
        previous=reg.events[index - 1].seq if index > 0 else None,
        next=reg.events[index + 1].seq if index + 1 < len(reg.events) else None,
    )
