"""HTML pages of the transparency register: plain HTML and one inline stylesheet.

Every value from the audit log is user text as far as this module is concerned
(a purpose, a title, even a department name in a tampered log), so it reaches
the page only through ``_esc``; markup this module writes itself is wrapped in
``_Html`` so the two cannot be confused. No script, no external resource: the
Content-Security-Policy in every page (and in the server's headers) allows only
the one stylesheet, by its hash.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from headcount.audit import AuditEvent
from headcount.privacy.noise import guessing_bound
from headcount.register.model import (
    ABORTED,
    APPROVED,
    AWAITING,
    EPOCH_ABORTED,
    EPOCH_COMPLETED,
    EXPIRED,
    NO_OUTCOME,
    REFUSED,
    RELEASED,
    REVOKED,
    Epoch,
    Project,
    Query,
    Register,
    Table,
)

INDEX = "index.html"
EVENTS = "events.html"

_CSS = """
:root{--ink:#1f2328;--muted:#59636e;--line:#d1d9e0;--bg:#f6f8fa;--card:#fff;
--ok:#1a7f37;--okbg:#dafbe1;--bad:#b42318;--badbg:#ffebe9;--warnbg:#fff8c5;--accent:#0b5cad}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);
font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
header.top{background:#0d2b45;color:#fff;padding:1.5rem 0 1.25rem}
header.top a{color:#cfe3ff}
.wrap{max-width:76rem;margin:0 auto;padding:0 1.5rem}
.eyebrow{margin:0;text-transform:uppercase;letter-spacing:.08em;font-size:.8rem;opacity:.8}
h1{margin:.2rem 0 .4rem;font-size:2rem;line-height:1.2}
.lede{margin:0;max-width:52rem;opacity:.92}
nav.jump{margin-top:.9rem;display:flex;gap:1.25rem;flex-wrap:wrap;font-size:.95rem}
main{padding:1.5rem 0 3rem}
section{margin:0 0 2rem}
h2{font-size:1.35rem;margin:0 0 .75rem;padding-bottom:.3rem;border-bottom:1px solid var(--line)}
h3{font-size:1.05rem;margin:0 0 .5rem}
a{color:var(--accent)}
.banner{border-radius:8px;padding:1rem 1.25rem;margin:0 0 2rem;border:2px solid}
.banner.ok{background:var(--okbg);border-color:var(--ok)}
.banner.fail{background:var(--badbg);border-color:var(--bad)}
.banner .verdict{display:block;font-size:1.25rem;font-weight:700;margin-bottom:.25rem}
.banner.ok .verdict{color:var(--ok)}
.banner.fail .verdict{color:var(--bad)}
.banner p{margin:.25rem 0}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.85em;
overflow-wrap:anywhere}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:1rem 1.25rem;
margin:0 0 1rem}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;background:var(--card);font-size:.95rem}
th,td{text-align:left;padding:.45rem .6rem;border-bottom:1px solid var(--line);vertical-align:top}
thead th{background:#eef2f6;font-weight:600;white-space:nowrap}
tfoot td,tfoot th{font-weight:700;border-top:2px solid var(--ink)}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.unverified td{background:var(--badbg)}
.badge{display:inline-block;padding:.05rem .5rem;border-radius:999px;font-size:.8rem;
font-weight:600;white-space:nowrap;border:1px solid transparent}
.b-ok{background:var(--okbg);color:var(--ok);border-color:#aceebb}
.b-bad{background:var(--badbg);color:var(--bad);border-color:#ffcecb}
.b-wait{background:var(--warnbg);color:#7d4e00;border-color:#eed888}
.b-muted{background:#eef2f6;color:var(--muted);border-color:var(--line)}
.supp{color:var(--muted);font-style:italic}
.muted{color:var(--muted)}
.small{font-size:.85rem}
.purpose{max-width:38rem}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:.35rem 1.25rem;margin:0}
dl.facts dt{color:var(--muted)}
dl.facts dd{margin:0}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(22rem,1fr));gap:1rem}
meter{width:6rem;vertical-align:middle}
details summary{cursor:pointer;color:var(--accent)}
pre{white-space:pre-wrap;overflow-wrap:anywhere;background:#f0f3f6;padding:.5rem;border-radius:6px;
font-size:.8rem;margin:.5rem 0 0}
footer{border-top:1px solid var(--line);padding:1.25rem 0 2rem;color:var(--muted);font-size:.9rem}
"""

_STYLE_HASH = base64.b64encode(hashlib.sha256(_CSS.encode("utf-8")).digest()).decode("ascii")

# Allows the one stylesheet above and nothing else: no script, no fetch, no frame.
# (data: images only for the empty favicon, which saves a request per page.)
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'none'"
)


class _Html(str):
    """Markup written by this module (already safe); anything else is escaped."""

    __slots__ = ()


def _esc(value: object) -> _Html:
    if isinstance(value, _Html):
        return value
    return _Html(html.escape(str(value), quote=True))


def _join(parts: Iterable[object], sep: str = "") -> _Html:
    return _Html(sep.join(_esc(p) for p in parts))


def _tag(name: str, content: object = "", **attrs: object) -> _Html:
    """``<name attrs>content</name>``; attribute values are escaped too.

    ``class_`` becomes ``class``; an attribute set to None is left out.
    """
    rendered = "".join(
        f' {k.rstrip("_").replace("_", "-")}="{_esc(v)}"' for k, v in attrs.items() if v is not None
    )
    return _Html(f"<{name}{rendered}>{_esc(content)}</{name}>")


def _table(
    headers: Sequence[object],
    rows: Iterable[tuple[Sequence[object], str]],
    *,
    numeric: Sequence[int] = (),
    foot: Sequence[object] | None = None,
    caption: str = "",
    table_id: str | None = None,
) -> _Html:
    """A table; each row is (cells, CSS class of the row). Columns in ``numeric``
    are right-aligned."""

    def cells(values: Sequence[object], tag: str) -> _Html:
        return _join(
            _tag(tag, v, class_="num" if i in numeric else None) for i, v in enumerate(values)
        )

    head = _tag("thead", _tag("tr", cells(headers, "th")))
    body = _tag("tbody", _join(_tag("tr", cells(r, "td"), class_=cls or None) for r, cls in rows))
    tail = _tag("tfoot", _tag("tr", cells(foot, "td"))) if foot is not None else _Html("")
    cap = _tag("caption", caption, class_="muted") if caption else _Html("")
    return _tag("div", _tag("table", _join([cap, head, body, tail]), id=table_id), class_="scroll")


def _badge(text: str, kind: str) -> _Html:
    return _tag("span", text, class_=f"badge b-{kind}")


def _unverified(trusted: bool) -> _Html:
    return _Html("") if trusted else _Html(" " + _badge("unverified", "bad"))


def _eps(value: float | None) -> str:
    return "—" if value is None else f"{value:.3g}"


def _when(at: str) -> str:
    """An audit time (UTC ISO-8601) to the second, for reading."""
    return at[:19].replace("T", " ") if at else "—"


def _short(identifier: str, n: int = 12) -> str:
    return identifier[:n] + ("…" if len(identifier) > n else "")


def _facts(items: Sequence[tuple[str, object]]) -> _Html:
    return _tag(
        "dl", _join(_join([_tag("dt", k), _tag("dd", v)]) for k, v in items), class_="facts"
    )


def _page(reg: Register, title: str, body: _Html, *, lede: str = "") -> str:
    nav = _join(
        [
            _tag("a", "Verification", href=f"{INDEX}#verification"),
            _tag("a", "Projects", href=f"{INDEX}#projects"),
            _tag("a", "Linkage epochs", href=f"{INDEX}#epochs"),
            _tag("a", "Queries", href=f"{INDEX}#queries"),
            _tag("a", "Full audit log", href=EVENTS),
        ]
    )
    header = _tag(
        "header",
        _tag(
            "div",
            _join(
                [
                    _tag("p", f"Headcount · federation {reg.federation}", class_="eyebrow"),
                    _tag("h1", title),
                    _tag("p", lede, class_="lede") if lede else "",
                    _tag("nav", nav, class_="jump", aria_label="Sections"),
                ]
            ),
            class_="wrap",
        ),
        class_="top",
    )
    footer = _tag(
        "footer",
        _tag(
            "div",
            _join(
                [
                    _tag(
                        "p",
                        f"Built {reg.built_at} from the federation's audit log. Nothing on these "
                        "pages identifies a person: the log holds only aggregate facts, and "
                        "every released table has passed differential-privacy noise and the "
                        "small-number rule.",
                    ),
                    _tag(
                        "p",
                        _join(
                            [
                                "Check it yourself: ",
                                _tag("code", "headcount audit verify --party DEPARTMENT"),
                                " verifies a department's own copy of the log; its head hash "
                                "must equal the one on the register's front page.",
                            ]
                        ),
                    ),
                ]
            ),
            class_="wrap",
        ),
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_esc(CONTENT_SECURITY_POLICY)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        '<link rel="icon" href="data:,">'
        f"<title>{_esc(title)} · {_esc(reg.federation)}</title>"
        f"<style>{_CSS}</style></head>\n<body>"
        f'{header}<main><div class="wrap">{body}</div></main>{footer}</body></html>\n'
    )


# -- index ------------------------------------------------------------------------------------
def _banner(reg: Register) -> _Html:
    ver = reg.verification
    key = _tag("code", ver.key_hex)
    if ver.ok:
        return _tag(
            "section",
            _join(
                [
                    _tag("span", "✔ Audit log verified", class_="verdict"),
                    _tag(
                        "p",
                        _join(
                            [
                                f"All {ver.events} events form one unbroken hash chain, and "
                                "every event is signed with the federation's audit key ",
                                key,
                                ".",
                            ]
                        ),
                    ),
                    _tag("p", _join(["Head hash ", _tag("code", ver.head or "(empty log)")])),
                ]
            ),
            class_="banner ok",
            id="verification",
            role="status",
        )
    where = f"event #{ver.first_bad_seq}" if ver.first_bad_seq is not None else "the log"
    kind = f" ({ver.first_bad_kind})" if ver.first_bad_kind else ""
    return _tag(
        "section",
        _join(
            [
                _tag("span", "✘ Verification FAILED", class_="verdict"),
                _tag(
                    "p",
                    _join(
                        [
                            "The first bad event is ",
                            _tag("strong", f"{where}{kind}", id="first-bad"),
                            ": ",
                            ver.message,
                            ".",
                        ]
                    ),
                ),
                _tag(
                    "p",
                    _join(
                        [
                            "Someone has edited, removed, reordered or forged the log. Everything "
                            "from that event on is shown below marked ",
                            _badge("unverified", "bad"),
                            " and must not be relied on. Checked against the federation's audit "
                            "key ",
                            key,
                            ".",
                        ]
                    ),
                ),
            ]
        ),
        class_="banner fail",
        id="verification",
        role="alert",
    )


_PROJECT_BADGE = {APPROVED: "ok", AWAITING: "wait", EXPIRED: "muted", REVOKED: "bad"}
_QUERY_BADGE = {RELEASED: "ok", REFUSED: "bad", ABORTED: "wait", NO_OUTCOME: "muted"}
_EPOCH_BADGE = {EPOCH_COMPLETED: "ok", EPOCH_ABORTED: "bad"}


def _projects(projects: Sequence[Project]) -> _Html:
    intro = _tag(
        "p",
        "A query must cite a project that the data steward of every department it uses has "
        "approved, each signing with their department's own key. Approvals shown here are "
        "checked against the departments' certificates.",
        class_="muted",
    )
    if not projects:
        return _join([intro, _tag("p", "No project has been proposed yet.", id="no-projects")])
    rows = []
    for p in projects:
        approvals = _join(
            (
                _badge(f"{a.party} ✔", "ok")
                if a.signature_ok
                else _badge(f"{a.party}: signature does not verify", "bad")
                for a in p.approvals
            ),
            " ",
        )
        rows.append(
            (
                [
                    _join([_tag("strong", p.title), _Html("<br>"), _tag("code", p.project_id)]),
                    _tag("div", p.purpose, class_="purpose"),
                    p.analyst,
                    ", ".join(p.parties),
                    approvals or _tag("span", "none yet", class_="muted"),
                    p.expires,
                    _join(
                        [
                            _badge(p.status, _PROJECT_BADGE.get(p.status, "muted")),
                            _unverified(p.trusted),
                        ]
                    ),
                ],
                "" if p.trusted else "unverified",
            )
        )
    return _join(
        [
            intro,
            _table(
                [
                    "Project",
                    "Purpose",
                    "Analyst",
                    "Departments",
                    "Approved by",
                    "Expires",
                    "Status",
                ],
                rows,
                table_id="projects-table",
            ),
        ]
    )


def _budget_table(reg: Register) -> _Html:
    """Spent and left per department per period, newest period first."""
    rows = []
    for line in reg.budgets:
        left = max(line.left, 0.0)
        meter = _tag(
            "meter",
            f"{left:.3g} of {line.budget:.3g}",
            min="0",
            max=f"{line.budget:g}",
            value=f"{left:g}",
            # Green while more than half is left, amber below half, red below a quarter.
            low=f"{line.budget / 4:g}",
            high=f"{line.budget / 2:g}",
            optimum=f"{line.budget:g}",
            title=f"{left:.3g} of {line.budget:.3g} left",
        )
        rows.append(
            (
                [
                    line.period,
                    line.party,
                    line.queries,
                    _eps(line.spent),
                    _join([_eps(left), " ", meter]),
                ],
                "",
            )
        )
    return _table(
        ["Period", "Department", "Queries", "ε spent", f"ε left of {reg.epsilon_per_period:.3g}"],
        rows,
        numeric=(2, 3, 4),
        caption="Privacy budget per department per period (across every epoch)",
        table_id="budget",
    )


def _epoch(e: Epoch) -> _Html:
    facts = _facts(
        [
            ("Epoch", _tag("code", e.epoch_id)),
            ("Linked (UTC)", _when(e.at)),
            (
                "Status",
                _badge(e.status, _EPOCH_BADGE.get(e.status, "muted")),
            ),
            ("Threshold", "—" if e.threshold is None else f"{e.threshold:.3g} (Dice)"),
        ]
    )
    return _tag(
        "div",
        _join(
            [
                _tag("h3", _join([f"Epoch {_short(e.epoch_id)}", _unverified(e.trusted)])),
                _tag("div", facts, class_="grid"),
            ]
        ),
        class_="card epoch",
        id=f"epoch-{e.seq}",
    )


def _epochs(reg: Register) -> _Html:
    eps = reg.epsilon_per_period
    intro = _tag(
        "p",
        f"Each department has a privacy budget of ε = {eps:g} per {reg.period}, across "
        "every linkage epoch, analyst and project: a new epoch resets nothing. With it, "
        f"nobody can be more than {100 * guessing_bound(eps):.1f}% sure of a fact about a "
        "child that a coin toss gives at 50%. Every query spends some of it, and a "
        "department refuses to take part once its budget is spent. A query without a "
        "recorded outcome counts as spent, since a department may have charged it. A "
        "linkage epoch is one run of record linkage over every department's keyed "
        "encodings; its linkage statistics stay with the coordinator.",
        class_="muted",
    )
    budget = _budget_table(reg)
    if not reg.epochs:
        return _join([intro, budget, _tag("p", "No linkage epoch has run yet.")])
    return _join([intro, budget, _join(_epoch(e) for e in reversed(reg.epochs))])


def _purpose_cell(q: Query) -> _Html:
    """The query's title (if it has one) as the link, with its stated purpose."""
    title = q.spec.get("title")
    if isinstance(title, str) and title.strip():
        return _tag(
            "div",
            _join(
                [
                    _tag("a", title, href=q.page),
                    _tag("div", q.purpose, class_="muted small"),
                ]
            ),
            class_="purpose",
        )
    return _tag("a", q.purpose or "(no purpose)", href=q.page, class_="purpose")


def _queries(queries: Sequence[Query]) -> _Html:
    if not queries:
        return _tag("p", "No query has been run yet.", id="no-queries")
    rows = []
    for q in queries:
        rows.append(
            (
                [
                    _tag("a", f"#{q.seq}", href=q.page),
                    _when(q.at),
                    _purpose_cell(q),
                    _tag("code", q.project_id)
                    if q.project_id
                    else _tag("span", "—", class_="muted"),
                    q.role or "—",
                    ", ".join(q.parties) or "—",
                    _eps(q.epsilon),
                    _join(
                        [
                            _badge(q.status, _QUERY_BADGE.get(q.status, "muted")),
                            _unverified(q.trusted),
                        ]
                    ),
                ],
                "" if q.trusted else "unverified",
            )
        )
    return _table(
        ["#", "When (UTC)", "Purpose", "Project", "Requested by", "Departments", "ε", "Outcome"],
        rows,
        numeric=(6,),
        table_id="queries-table",
    )


def render_index(reg: Register) -> str:
    released = sum(q.status == RELEASED for q in reg.queries)
    body = _join(
        [
            _banner(reg),
            _tag(
                "section", _join([_tag("h2", "Projects"), _projects(reg.projects)]), id="projects"
            ),
            _tag("section", _join([_tag("h2", "Linkage epochs"), _epochs(reg)]), id="epochs"),
            _tag(
                "section",
                _join(
                    [
                        _tag("h2", f"Queries ({len(reg.queries)}, {released} released)"),
                        _queries(reg.queries),
                    ]
                ),
                id="queries",
            ),
        ]
    )
    return _page(
        reg,
        "Transparency register",
        body,
        lede="Every project, linkage epoch and query of this federation, with its stated "
        "purpose, the privacy budget each department has spent and every table released — "
        "read from the federation's signed, hash-chained audit log.",
    )


# -- one page per query -------------------------------------------------------------------------
def _released_table(table: Table, spec: Mapping[str, Any]) -> _Html:
    group_by = spec.get("group_by")
    group_label = group_by if isinstance(group_by, str) and group_by else "Group"
    headers: list[object] = [group_label]
    if table.column_attribute:
        headers.append(table.column_attribute)
    headers += ["Count", "95% interval"]
    if table.measure_attribute:
        headers += [
            f"Mean {table.measure_attribute}",
            "95% interval of the mean",
            f"Sum {table.measure_attribute}",
        ]
    headers.append("Status")
    numeric_from = 2 if table.column_attribute else 1
    numeric = tuple(range(numeric_from, len(headers) - 1))

    def value(v: float | None, fmt: str) -> object:
        return _tag("span", "suppressed", class_="supp") if v is None else format(v, fmt)

    def interval(pair: tuple[float, float] | None, fmt: str) -> object:
        return "—" if pair is None else f"{pair[0]:{fmt}} – {pair[1]:{fmt}}"

    rows = []
    for c in table.cells:
        cells: list[object] = [c.group]
        if table.column_attribute:
            cells.append(c.column)
        cells += [value(c.value, ","), interval(c.interval, ",")]
        if table.measure_attribute:
            cells += [
                value(c.mean, ",.2f"),
                interval(c.mean_interval, ",.2f"),
                value(c.sum, ",.0f"),
            ]
        cells.append(_status(c.status))
        rows.append((cells, ""))
    foot: list[object] = ["Total"]
    if table.column_attribute:
        foot.append("")
    foot += [value(table.total, ","), interval(table.total_interval, ",")]
    if table.measure_attribute:
        foot += ["", "", ""]
    foot.append(_status("released" if table.total is not None else "primary"))
    return _table(
        headers, rows, numeric=numeric, foot=foot, caption=table.title, table_id="released-table"
    )


def _status(status: str) -> _Html:
    if status == "released":
        return _badge("released", "ok")
    if status == "primary":
        return _badge("suppressed: small number", "wait")
    if status == "secondary":
        return _badge("suppressed: protects another cell", "wait")
    return _badge(status or "unknown", "muted")


def _describe(spec: Mapping[str, Any]) -> _Html:
    """What was counted, in words, from the query's recorded specification."""

    def filters(raw: Any) -> str:
        if not isinstance(raw, list):
            return ""
        out = []
        for f in raw:
            if isinstance(f, dict) and isinstance(f.get("attribute"), str):
                values = [v for v in f.get("values", []) if isinstance(v, str)]
                out.append(f"{f['attribute']} in {{{', '.join(values)}}}")
        return "; ".join(out)

    def text(key: str) -> str:
        v = spec.get(key)
        return v if isinstance(v, str) else ""

    items: list[tuple[str, object]] = []
    measure = text("measure") or "count"
    attribute = text("measure_attribute")
    items.append(("Measure", f"{measure} of {attribute}" if attribute else measure))
    population = text("population_party")
    pf = filters(spec.get("population_filters"))
    items.append(("Population", f"{population} records" + (f" where {pf}" if pf else "")))
    conditions = spec.get("conditions")
    if isinstance(conditions, list):
        for c in conditions:
            if isinstance(c, dict) and isinstance(c.get("party"), str):
                link = c.get("link") if isinstance(c.get("link"), str) else "person"
                cf = filters(c.get("filters"))
                what = "the same person as" if link == "person" else "in a household with"
                items.append(
                    (
                        "Condition",
                        f"{what} a {c['party']} record" + (f" where {cf}" if cf else ""),
                    )
                )
    group = text("group_by")
    if group:
        gf = filters(spec.get("group_filters"))
        items.append(
            ("Grouped by", f"{text('group_party')}.{group}" + (f" (where {gf})" if gf else ""))
        )
    if text("population_group_by"):
        items.append(("and by", f"{population}.{text('population_group_by')}"))
    return _facts(items)


def render_query(reg: Register, q: Query) -> str:
    outcome = _badge(q.status, _QUERY_BADGE.get(q.status, "muted"))
    seqs = _join((_tag("a", f"#{s}", href=f"{EVENTS}#event-{s}") for s in q.event_seqs), ", ")
    left = ", ".join(f"{p}: {v:.3g}" for p, v in sorted(q.budget_left.items())) or "—"
    facts = _facts(
        [
            ("Purpose", _tag("span", q.purpose or "(none stated)", class_="purpose", id="purpose")),
            ("Outcome", _join([outcome, _unverified(q.trusted)])),
            ("Project", _tag("code", q.project_id) if q.project_id else "—"),
            (
                "Requested by",
                f"{q.role or 'unknown role'}" + (f" ({q.analyst})" if q.analyst else ""),
            ),
            ("Departments", ", ".join(q.parties) or "—"),
            ("Epoch", _tag("code", q.epoch_id) if q.epoch_id else "—"),
            ("Privacy budget spent", f"ε = {_eps(q.epsilon)} from each department above"),
            ("Budget left after", left),
            ("When (UTC)", _when(q.at)),
            ("Query id", _tag("code", q.query_id)),
            ("Audit events", seqs),
        ]
    )
    parts: list[object] = [
        _tag("p", _tag("a", "← Back to the register", href=INDEX)),
        _tag("section", facts, class_="card"),
    ]
    if not q.trusted:
        parts.insert(
            1,
            _tag(
                "div",
                _join(
                    [
                        _tag("span", "✘ Not verified", class_="verdict"),
                        "This query's events lie in a part of the audit log that fails "
                        "verification; what is shown here may have been altered.",
                    ]
                ),
                class_="banner fail",
                role="alert",
            ),
        )
    if q.table is not None:
        noise = (
            f" Noise: discrete Laplace, scale {q.table.noise_scale:.3g}, the sum of shares "
            "from parties that do not decrypt. Each interval holds the true count in 95% "
            "of releases (noise and rounding)."
            if q.table.noise_scale is not None
            else ""
        )
        parts.append(
            _tag(
                "section",
                _join(
                    [
                        _tag("h2", "Released table"),
                        _released_table(q.table, q.spec),
                        _tag(
                            "p",
                            "Counts carry differential-privacy noise, are rounded, and small "
                            "counts are suppressed, together with any cell from which one "
                            f"could be worked out.{noise}",
                            class_="muted",
                        ),
                    ]
                ),
            )
        )
    elif q.status in (REFUSED, ABORTED):
        heading = "Refused" if q.status == REFUSED else "Aborted: no table was released"
        parts.append(
            _tag("section", _join([_tag("h2", heading), _tag("p", q.reason, id="reason")]))
        )
    else:
        parts.append(_tag("p", "No table was released for this query.", class_="muted"))
    if q.spec:
        parts.append(
            _tag(
                "section",
                _join(
                    [_tag("h2", "What was asked"), _tag("div", _describe(q.spec), class_="card")]
                ),
            )
        )
    title = q.spec.get("title")
    return _page(reg, f"Query #{q.seq}", _join(parts), lede=title if isinstance(title, str) else "")


# -- the full log -----------------------------------------------------------------------------
def _summary(e: AuditEvent) -> str:
    b = e.body

    def s(key: str) -> str:
        v = b.get(key)
        return v if isinstance(v, str) else ""

    if e.kind == "ceremony":
        parties = b.get("parties")
        n = len(parties) if isinstance(parties, list) else 0
        return f"key ceremony with {n} departments" + (
            ", confirmed" if b.get("confirmed") is True else ", not confirmed"
        )
    if e.kind == "epoch_started":
        return f"linkage epoch {_short(s('epoch_id'))} started"
    if e.kind == "epoch":
        records = b.get("records")
        total = (
            sum(v for v in records.values() if isinstance(v, int))
            if isinstance(records, dict)
            else 0
        )
        return f"linkage epoch {_short(s('epoch_id'))}: {total:,} records linked"
    if e.kind == "project_proposed":
        project = b.get("project")
        pid = project.get("project_id") if isinstance(project, dict) else ""
        return f"project {pid} proposed"
    if e.kind in ("project_approved", "project_revoked"):
        verb = "approved" if e.kind == "project_approved" else "revoked"
        return f"{s('party')} {verb} project {s('project_id')}"
    if e.kind == "query":
        return f"query: {s('purpose')}"
    if e.kind == "release":
        return "table released"
    if e.kind == "refusal":
        return f"refused: {s('reason')}"
    if e.kind == "query_aborted":
        return f"query aborted: {s('reason')}"
    if e.kind == "epoch_aborted":
        return f"linkage epoch {_short(s('epoch_id'))} aborted: {s('reason')}"
    return ""


def render_events(reg: Register) -> str:
    ver = reg.verification
    rows = []
    for e in reg.events:
        trusted = ver.trusted(e.seq)
        body = json.dumps(dict(e.body), indent=2, sort_keys=True, ensure_ascii=False)
        check = (
            _badge("verified", "ok")
            if trusted
            else _badge("first bad event" if e.seq == ver.first_bad_seq else "unverified", "bad")
        )
        rows.append(
            (
                [
                    _tag("a", f"#{e.seq}", id=f"event-{e.seq}", href=f"#event-{e.seq}"),
                    _when(e.at),
                    _tag("code", e.kind),
                    _join(
                        [
                            _summary(e),
                            _tag("details", _join([_tag("summary", "details"), _tag("pre", body)])),
                        ]
                    ),
                    _tag("code", _short(e.hash, 16), title=e.hash),
                    check,
                ],
                "" if trusted else "unverified",
            )
        )
    for seq in reg.malformed:
        rows.append(
            (
                [
                    f"#{seq}",
                    "",
                    "",
                    "stored row is not a valid event",
                    "",
                    _badge("malformed", "bad"),
                ],
                "unverified",
            )
        )
    body = _join(
        [
            _banner(reg),
            _tag("p", _tag("a", "← Back to the register", href=INDEX)),
            _table(
                ["#", "When (UTC)", "Kind", "What", "Hash", "Check"],
                rows,
                table_id="events-table",
            ),
        ]
    )
    return _page(
        reg,
        "Full audit log",
        body,
        lede="Every event in order. Each event's hash covers its content and the previous "
        "event's hash, and the coordinator signs it with the federation's audit key.",
    )
