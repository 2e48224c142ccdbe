"""Render a quality report as one self-contained HTML page.

Figures are inline PNG data URIs and the styles are inline: the page loads
nothing from anywhere, so a steward can open it offline, attach it to an
email or archive it with the epoch. Every number on it is a protected
aggregate; a machine-readable copy of exactly those numbers is embedded as
JSON (``<script type="application/json" id="report-data">``), not code.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from html import escape
from typing import Any

from headcount.report import plots
from headcount.report.subgroups import SubgroupResult
from headcount.report.summary import EpochSummary

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 68rem; padding: 0 1rem; color: #1b1b1b; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.25rem; margin-top: 2.2rem; border-bottom: 1px solid #ddd; }
h3 { font-size: 1.02rem; margin-bottom: 0.3rem; }
table { border-collapse: collapse; margin: 0.6rem 0 1rem; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.55rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f2f4f5; }
td.withheld { color: #777; font-style: italic; }
.note { color: #444; font-size: 0.9rem; }
.warning { background: #fff4e5; border-left: 4px solid #b85c00; padding: 0.5rem 0.75rem; }
.meta { color: #555; font-size: 0.9rem; }
.grid { display: flex; flex-wrap: wrap; gap: 1rem; }
.grid figure { margin: 0; }
img { max-width: 100%; height: auto; }
.refused { color: #8a4b00; }
"""

WITHHELD = "withheld"


def _count(value: int | None) -> str:
    return WITHHELD if value is None else f"{value:,}"


def _rate(value: float | None) -> str:
    return WITHHELD if value is None else f"{value:.1%}"


def _estimate(value: float | None) -> str:
    return "not estimated" if value is None else f"{value:.3f}"


def _cell(text: str) -> str:
    cls = ' class="withheld"' if text in (WITHHELD, "not estimated") else ""
    return f"<td{cls}>{escape(text)}</td>"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(uri: str | None, alt: str) -> str:
    if uri is None:
        return ""
    return f'<figure><img src="{uri}" alt="{escape(alt)}"></figure>'


def _rule(summary: EpochSummary) -> str:
    p = summary.policy
    return (
        f"counts below {p.threshold} (zero included) are withheld, others rounded to the "
        f"nearest {p.rounding_base}"
        + (
            ", and further cells withheld where a withheld one could be recovered from a total"
            if p.secondary
            else ""
        )
    )


def _parties_section(summary: EpochSummary) -> str:
    rows = [
        [
            p.party,
            _count(p.records),
            _count(p.linked),
            _rate(p.linked_rate),
            _count(p.households),
        ]
        for p in summary.parties
    ]
    return _table(
        ["department", "records", "linked to another department", "share", "households"], rows
    )


def _pairs_section(summary: EpochSummary) -> str:
    parties = [p.party for p in summary.parties]
    rates: dict[tuple[str, str], float | None] = {}
    rows = []
    for p in summary.pairs:
        rates[(p.left, p.right)] = p.left_rate
        rates[(p.right, p.left)] = p.right_rate
        rows.append(
            [
                f"{p.left} x {p.right}",
                f"{p.threshold:.3f}",
                _count(p.links),
                _count(p.key_links),
                _rate(p.left_rate),
                _rate(p.right_rate),
                _estimate(p.est_precision),
                _estimate(p.est_recall),
                _estimate(p.est_f1),
            ]
        )
    table = _table(
        [
            "pair (A x B)",
            "threshold",
            "links",
            "by match-key",
            "share of A linked",
            "share of B linked",
            "est. precision",
            "est. recall",
            "est. F1",
        ],
        rows,
    )
    figure = _figure(
        plots.rate_matrix(parties, rates, "Share of each department's records linked"),
        "Share of each department's records linked to each other department",
    )
    return figure + table


def _scores_section(summary: EpochSummary) -> str:
    figures = []
    rows = []
    for p in summary.pairs:
        h = p.histogram
        figures.append(
            _figure(
                plots.score_histogram(p),
                f"Link scores of {p.left} x {p.right} with threshold {p.threshold:.3f}",
            )
        )
        if h is None:
            continue
        withheld = sum(c is None for c in h.counts)
        rows.append(
            [
                f"{p.left} x {p.right}",
                f"{h.threshold:.3f}",
                f"{h.floor:.3f}",
                f"{h.sampled_party}: {_count(h.sampled_records)}",
                _count(h.total),
                f"{withheld} of {len(h.counts)}",
            ]
        )
    table = _table(
        ["pair", "threshold", "floor", "records sampled", "links binned", "bins withheld"],
        rows,
    )
    return '<div class="grid">' + "".join(figures) + "</div>" + table


def _households_section(summary: EpochSummary) -> str:
    parties = [p.party for p in summary.parties]
    rates: dict[tuple[str, str], float | None] = {}
    rows = []
    for h in summary.households:
        rates[(h.left, h.right)] = h.left_rate
        rates[(h.right, h.left)] = h.right_rate
        rows.append(
            [
                f"{h.left} x {h.right}",
                _count(h.left_households),
                _count(h.right_households),
                _count(h.shared),
                _rate(h.left_rate),
                _rate(h.right_rate),
            ]
        )
    figure = _figure(
        plots.rate_matrix(parties, rates, "Share of each department's households shared"),
        "Share of each department's households also seen by each other department",
    )
    table = _table(
        [
            "pair (A x B)",
            "households of A",
            "households of B",
            "shared",
            "share of A's",
            "share of B's",
        ],
        rows,
    )
    return figure + table


def _subgroups_section(
    summary: EpochSummary, results: Sequence[SubgroupResult] | None, why_not: str
) -> str:
    if results is None:
        return f'<p class="note">Not run: {escape(why_not)}</p>'
    if not results:
        return '<p class="note">No subgroup query applies to this federation.</p>'
    parts = []
    for r in results:
        q = r.query
        heading = f"{q.population} records linked to {q.partner}, by {q.attribute}"
        parts.append(f"<h3>{escape(heading)}</h3>")
        if r.refused:
            parts.append(f'<p class="refused">Refused by the federation: {escape(r.refused)}</p>')
            continue
        try:
            overall = summary.link_rate(q.population, q.partner)
        except KeyError:
            overall = None
        parts.append(
            _figure(
                plots.subgroup_rates(r, overall),
                f"Share of {q.population} records linked to {q.partner} by {q.attribute}",
            )
        )
        parts.append(
            f'<p class="meta">Query {escape(r.query_id)}, epsilon {r.epsilon:g}, '
            f"discrete Laplace scale {r.noise_scale:g}; all records: {_rate(overall)} "
            "(from the coordinator's link counts).</p>"
        )
        parts.append(
            _table(
                [
                    q.attribute,
                    "records (protected)",
                    f"not known to {q.partner}",
                    "link rate",
                    "approx. 95% +/-",
                    "note",
                ],
                [
                    [
                        s.group,
                        _count(s.total),
                        _count(s.unlinked),
                        _rate(s.rate),
                        WITHHELD if s.half_width is None else f"{s.half_width:.1%}",
                        s.note,
                    ]
                    for s in r.rates
                ],
            )
        )
    return "".join(parts)


def _json_block(doc: dict[str, Any]) -> str:
    # "</" cannot end the script element early once escaped; JSON stays valid.
    text = json.dumps(doc, sort_keys=True).replace("</", "<\\/")
    return f'<script type="application/json" id="report-data">{text}</script>'


def render_report(
    summary: EpochSummary,
    *,
    federation_name: str,
    subgroups: Sequence[SubgroupResult] | None = None,
    subgroups_skipped: str = "no approved project was given for the subgroup queries.",
    project_id: str = "",
    generated: dt.datetime | None = None,
) -> str:
    """The whole report page for ``summary`` (and subgroup results, if run)."""
    when = (generated or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%d %H:%M UTC")
    rule = _rule(summary)

    def section(anchor: str, title: str, body: str) -> str:
        return f'<section id="{anchor}"><h2>{escape(title)}</h2>{body}</section>'

    intro = (
        f"<h1>Linkage quality report</h1>"
        f'<p class="meta">Federation {escape(federation_name)}, linkage epoch '
        f"<code>{escape(summary.epoch_id)}</code>, default threshold {summary.threshold:.3f}; "
        f"{_count(summary.clusters)} people seen by two or more departments. "
        f"Generated {escape(when)}.</p>"
        '<p class="note">Aggregates only. The coordinator, which links pseudonymous '
        "encodings, supplied the link counts, scores and household counts; the subgroup "
        "rates are protected query results. Throughout, "
        f"{escape(rule)}. Rates are computed from the rounded counts shown.</p>"
        '<p class="warning" id="trust-domain"><b>For the coordinator\'s operator.</b> '
        "The link, cluster, household and score figures on this page are exact linkage "
        "statistics, rounded and suppressed but not differentially private: they stay "
        "within the coordinator's trust domain (docs/privacy.md). Only the subgroup link "
        "rates are protected releases, charged to each department's budget.</p>"
    )
    how_to_read = (
        "<ul class='note'>"
        "<li><b>Links</b> join records the coordinator judged to be the same person "
        "(Dice score at or above the threshold, or equal keyed match-keys).</li>"
        "<li><b>Estimated precision</b> is the share of links that are right, <b>estimated "
        "recall</b> the share of true matches that were linked; both are estimated from "
        "the score distribution alone (no ground truth exists in production).</li>"
        "<li>A link rate mixes two things: how many people really are known to both "
        "departments, and how well their records link. Compare rates between groups "
        "rather than reading one rate alone.</li></ul>"
    )
    subgroup_note = (
        '<p class="note">Estimates from protected counts: each table below is an ordinary '
        "protected query (population by its own attribute against the other department), "
        "with noise added under encryption and the small-number rule applied before release. "
        "Link rate = 1 - (records not known to the other department) / (records in the "
        "subgroup). Intervals show how far noise and rounding alone may move a rate."
        + (f" Project: {escape(project_id)}." if project_id else "")
        + "</p>"
    )
    body = "".join(
        [
            intro,
            how_to_read,
            section("departments", "Departments in this epoch", _parties_section(summary)),
            section("pairs", "Link rates by department pair", _pairs_section(summary)),
            section(
                "scores",
                "Score distributions and thresholds",
                '<p class="note">Dice scores of the one-to-one links the quality estimate was '
                "fitted to: sampled records of the smaller department against all of the "
                "other, down to the floor. Matches pile up near 1; the best wrong guesses "
                "of unmatched records sit near the floor. A threshold in the valley between "
                "them loses few matches and keeps few errors.</p>" + _scores_section(summary),
            ),
            section(
                "quality",
                "Estimated precision and recall",
                _figure(plots.precision_recall(summary), "Estimated precision and recall")
                or '<p class="note">No pair had enough candidates for an estimate.</p>',
            ),
            section(
                "households",
                "Household link rates",
                '<p class="note">Households are keyed addresses (a keyed hash of the '
                "normalised address and postcode): the share of one department's households "
                "at which the other department also holds a record.</p>"
                + _households_section(summary),
            ),
            section(
                "subgroups",
                "Link rates by subgroup",
                subgroup_note + _subgroups_section(summary, subgroups, subgroups_skipped),
            ),
        ]
    )
    data = {
        "report": "linkage-quality",
        "federation": federation_name,
        "generated": when,
        "epoch": summary.to_json(),
        "subgroups": None if subgroups is None else [r.to_json() for r in subgroups],
    }
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>Linkage quality report, epoch {escape(summary.epoch_id[:12])}</title>"
        f"<style>{_STYLE}</style></head><body>{body}{_json_block(data)}</body></html>\n"
    )
