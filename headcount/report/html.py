"""Render a quality report as one self-contained HTML page, from a Jinja2 template.

Figures are inline PNG data URIs and the styles are inline: the page loads
nothing from anywhere, so a steward can open it offline, attach it to an
email or archive it with the epoch. The template (``templates/report.html``)
is rendered with autoescaping on, so every label and reason reaches the page
escaped. Every number on it is a protected aggregate; a machine-readable copy
of exactly those numbers is embedded as JSON (``<script type="application/json"
id="report-data">``), not code.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from headcount.linkage.quality import basis_note
from headcount.protect.labels import status_label
from headcount.protect.sdc import SdcPolicy
from headcount.report import plots
from headcount.report.subgroups import SubgroupRate, SubgroupResult
from headcount.report.summary import EpochSummary

_CSS = (resources.files("headcount.report") / "templates" / "report.css").read_text("utf-8")

WITHHELD = "withheld"
NOT_ESTIMATED = "not estimated"


def _count(value: int | None) -> str:
    return WITHHELD if value is None else f"{value:,}"


def _rate(value: float | None) -> str:
    return WITHHELD if value is None else f"{value:.1%}"


def _estimate(value: float | None) -> str:
    return NOT_ESTIMATED if value is None else f"{value:.3f}"


def rate_text(r: SubgroupRate) -> str:
    """A subgroup rate with its 95% interval within [0, 1], e.g. "40.0% (0.0%–100.0%)";
    a withheld rate as withheld, with the range its suppression leaves if known."""
    if r.rate is not None and r.low is not None and r.high is not None:
        return f"{r.rate:.1%} ({r.low:.1%}–{r.high:.1%})"
    if r.low is not None and r.high is not None:
        return f"withheld; 95% range {r.low:.1%}–{r.high:.1%}"
    return WITHHELD


def _protected(value: int | None, status: str, policy: SdcPolicy) -> str:
    """A released count, or the label of the rule that withheld it (as the register)."""
    return f"{value:,}" if value is not None else status_label(status, policy).short


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


@dataclass(frozen=True, slots=True)
class _Subgroup:
    """One subgroup query as the template shows it."""

    heading: str
    refused: str
    figure: str | None
    alt: str
    query_id: str
    epsilon: float
    noise_scale: float
    overall: str
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


def _subgroup(summary: EpochSummary, r: SubgroupResult) -> _Subgroup:
    q = r.query
    heading = f"{q.population} records linked to {q.partner}, by {q.attribute}"
    alt = f"Share of {q.population} records linked to {q.partner} by {q.attribute}"
    if r.refused:
        return _Subgroup(heading, r.refused, None, alt, "", 0.0, 0.0, "", (), ())
    try:
        overall = summary.link_rate(q.population, q.partner)
    except KeyError:
        overall = None
    policy = summary.policy
    rows = tuple(
        (
            s.group,
            _protected(s.total, s.total_status, policy),
            _protected(s.unlinked, s.unlinked_status, policy),
            rate_text(s),
            s.note,
        )
        for s in r.rates
    )
    return _Subgroup(
        heading,
        "",
        plots.subgroup_rates(r, overall),
        alt,
        r.query_id,
        r.epsilon,
        r.noise_scale,
        _rate(overall),
        (
            q.attribute,
            "records (protected)",
            f"not known to {q.partner}",
            "link rate (95% interval)",
            "note",
        ),
        rows,
    )


def _pair_rows(summary: EpochSummary) -> list[tuple[str, ...]]:
    return [
        (
            f"{p.left} x {p.right}",
            f"{p.threshold:.3f}",
            _count(p.links),
            _count(p.key_links),
            _rate(p.left_rate),
            _rate(p.right_rate),
            _estimate(p.est_precision),
            _estimate(p.est_recall),
            _estimate(p.est_f1),
            basis_note(p.estimate_basis) if p.est_precision is not None else "",
        )
        for p in summary.pairs
    ]


def _histograms(
    summary: EpochSummary,
) -> tuple[list[tuple[str | None, str]], list[tuple[str, ...]]]:
    figures: list[tuple[str | None, str]] = []
    rows: list[tuple[str, ...]] = []
    for p in summary.pairs:
        figures.append(
            (
                plots.score_histogram(p),
                f"Link scores of {p.left} x {p.right} with threshold {p.threshold:.3f}",
            )
        )
        h = p.histogram
        if h is None:
            continue
        withheld = sum(c is None for c in h.counts)
        rows.append(
            (
                f"{p.left} x {p.right}",
                f"{h.threshold:.3f}",
                f"{h.floor:.3f}",
                f"{h.sampled_party}: {_count(h.sampled_records)}",
                _count(h.total),
                f"{withheld} of {len(h.counts)}",
            )
        )
    return figures, rows


def _rates(
    pairs: Sequence[tuple[str, str, float | None, float | None]],
) -> dict[tuple[str, str], float | None]:
    out: dict[tuple[str, str], float | None] = {}
    for left, right, left_rate, right_rate in pairs:
        out[(left, right)], out[(right, left)] = left_rate, right_rate
    return out


def _json_block(doc: dict[str, Any]) -> Markup:
    # No "<" at all inside the script element (so neither "</script" nor "<!--"
    # can change how it is parsed); "\u003c" is the same JSON string.
    return Markup(json.dumps(doc, sort_keys=True).replace("<", "\\u003c"))


@functools.cache
def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("headcount.report", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )
    env.filters["count_text"] = _count
    env.tests["quiet"] = lambda c: (
        isinstance(c, str) and (c.startswith(WITHHELD) or c == NOT_ESTIMATED)
    )
    return env


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
    parties = [p.party for p in summary.parties]
    histograms, histogram_rows = _histograms(summary)
    pair_rates = _rates([(p.left, p.right, p.left_rate, p.right_rate) for p in summary.pairs])
    household_rates = _rates(
        [(h.left, h.right, h.left_rate, h.right_rate) for h in summary.households]
    )
    data = {
        "report": "linkage-quality",
        "federation": federation_name,
        "generated": when,
        "epoch": summary.to_json(),
        "subgroups": None if subgroups is None else [r.to_json() for r in subgroups],
    }
    return (
        _environment()
        .get_template("report.html")
        .render(
            css=Markup(_CSS),  # our own stylesheet, inlined verbatim
            summary=summary,
            federation_name=federation_name,
            when=when,
            rule=_rule(summary),
            parties=[
                (
                    p.party,
                    _count(p.records),
                    _count(p.linked),
                    _rate(p.linked_rate),
                    _count(p.households),
                )
                for p in summary.parties
            ],
            pair_matrix=plots.rate_matrix(
                parties, pair_rates, "Share of each department's records linked"
            ),
            pairs=_pair_rows(summary),
            histograms=histograms,
            histogram_rows=histogram_rows,
            precision_recall=plots.precision_recall(summary),
            household_matrix=plots.rate_matrix(
                parties, household_rates, "Share of each department's households shared"
            ),
            households=[
                (
                    f"{h.left} x {h.right}",
                    _count(h.left_households),
                    _count(h.right_households),
                    _count(h.shared),
                    _rate(h.left_rate),
                    _rate(h.right_rate),
                )
                for h in summary.households
            ],
            subgroups=None if subgroups is None else [_subgroup(summary, r) for r in subgroups],
            subgroups_skipped=subgroups_skipped,
            project_id=project_id,
            data_json=_json_block(data),
        )
    )
