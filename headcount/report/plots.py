"""The report's figures: matplotlib (Agg backend) rendered to base64 PNG data URIs.

Every figure is drawn from protected aggregates only (`headcount.report.summary`,
`headcount.report.subgroups`); withheld values are drawn as such, never
estimated. PNGs carry no metadata, so the report holds nothing but pixels
and the numbers printed beside them.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from headcount.report.subgroups import SubgroupResult
from headcount.report.summary import EpochSummary, PairSummary

LINK_COLOUR = "#1f6f8b"
SUPPRESSED_COLOUR = "#9a9a9a"
THRESHOLD_COLOUR = "#c0392b"


def to_data_uri(fig: Figure) -> str:
    """The figure as a ``data:image/png;base64,...`` URI; the figure is closed."""
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    finally:
        plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def score_histogram(pair: PairSummary) -> str | None:
    """Released link-score bins of one pair with its threshold; None without a histogram."""
    h = pair.histogram
    if h is None:
        return None
    fig, ax = plt.subplots(figsize=(5.2, 2.9))
    lefts = list(h.edges[:-1])
    widths = [b - a for a, b in zip(h.edges[:-1], h.edges[1:], strict=True)]
    shown = [(x, w, c) for x, w, c in zip(lefts, widths, h.counts, strict=True) if c is not None]
    if shown:
        ax.bar(
            [x for x, _, _ in shown],
            [c for _, _, c in shown],
            width=[w for _, w, _ in shown],
            align="edge",
            color=LINK_COLOUR,
            edgecolor="white",
            label="links (rounded)",
        )
    withheld = [x + w / 2 for x, w, c in zip(lefts, widths, h.counts, strict=True) if c is None]
    floor_y = 1.0
    if withheld:
        ax.scatter(
            withheld,
            [floor_y] * len(withheld),
            marker="x",
            color=SUPPRESSED_COLOUR,
            zorder=3,
            label="bin withheld (small number)",
        )
    ax.axvline(h.threshold, color=THRESHOLD_COLOUR, linestyle="--", linewidth=1.5)
    ax.annotate(
        f"threshold {h.threshold:.3f}",
        xy=(h.threshold, 1.0),
        xycoords=("data", "axes fraction"),
        xytext=(-4, -4),
        textcoords="offset points",
        ha="right",
        va="top",
        color=THRESHOLD_COLOUR,
        fontsize=8,
    )
    ax.set_yscale("log")
    top = max([c for _, _, c in shown], default=10)
    ax.set_ylim(0.7, top * 1.8)
    ax.set_xlim(h.edges[0], h.edges[-1])
    ax.set_xlabel("Dice score of the link")
    ax.set_ylabel("links (log scale)")
    ax.set_title(f"{pair.left} x {pair.right}", fontsize=10)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=2, frameon=False)
    return to_data_uri(fig)


def precision_recall(summary: EpochSummary) -> str | None:
    """Estimated precision and recall per pair (dots); None if no pair has an estimate."""
    pairs = [p for p in summary.pairs if p.est_precision is not None]
    if not pairs:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 0.45 * len(pairs) + 1.2))
    labels = [f"{p.left} x {p.right}" for p in pairs]
    ys = list(range(len(pairs)))
    precision = [p.est_precision or 0.0 for p in pairs]
    recall = [p.est_recall or 0.0 for p in pairs]
    ax.scatter(precision, [y + 0.12 for y in ys], marker="o", color=LINK_COLOUR, label="precision")
    ax.scatter(recall, [y - 0.12 for y in ys], marker="s", color="#e67e22", label="recall")
    low = min([*precision, *recall])
    ax.set_xlim(max(0.0, min(0.9, low - 0.02)), 1.006)
    ax.set_yticks(ys, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("estimated (EM on the score distribution, no ground truth)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    return to_data_uri(fig)


def rate_matrix(
    parties: Sequence[str], rates: dict[tuple[str, str], float | None], title: str
) -> str:
    """A heat map: row department's share linked to the column department."""
    n = len(parties)
    fig, ax = plt.subplots(figsize=(1.25 * n + 1.8, 1.0 * n + 1.0))
    grid = [[float("nan")] * n for _ in range(n)]
    for i, a in enumerate(parties):
        for j, b in enumerate(parties):
            value = rates.get((a, b))
            if value is not None:
                grid[i][j] = value
    ax.imshow(grid, cmap="Blues", vmin=0.0, vmax=1.0)
    for i, a in enumerate(parties):
        for j, b in enumerate(parties):
            if a == b:
                text = "-"
            else:
                value = rates.get((a, b))
                text = "withheld" if value is None else f"{value:.1%}"
            colour = "white" if grid[i][j] == grid[i][j] and grid[i][j] > 0.6 else "black"
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color=colour)
    ax.set_xticks(range(n), parties, fontsize=8, rotation=20)
    ax.set_yticks(range(n), parties, fontsize=8)
    ax.set_xlabel("linked to")
    ax.set_ylabel("records of")
    ax.set_title(title, fontsize=10)
    return to_data_uri(fig)


def subgroup_rates(result: SubgroupResult, overall: float | None) -> str | None:
    """Link rate per subgroup with its 95% interval (within [0, 1]); None if no rate.

    A withheld rate is drawn as withheld, never as a value: a grey band over the
    range of rates its suppression leaves (when the subgroup's total was
    released), or the word "withheld" where nothing is known.
    """
    if not result.rates:
        return None
    groups = [r.group for r in result.rates]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.7 * len(groups) + 1.5), 3.1))
    xs = {g: i for i, g in enumerate(groups)}
    shown = [r for r in result.rates if r.rate is not None]
    if shown:
        rates = [r.rate or 0.0 for r in shown]
        pairs = zip(shown, rates, strict=True)
        lows, highs = zip(
            *[
                (r.low if r.low is not None else v, r.high if r.high is not None else v)
                for r, v in pairs
            ],
            strict=True,
        )
        ax.errorbar(
            [xs[r.group] for r in shown],
            rates,
            # Asymmetric: the interval is bounded to [0, 1], so never drawn past either.
            yerr=[
                [rate - low for rate, low in zip(rates, lows, strict=True)],
                [high - rate for rate, high in zip(rates, highs, strict=True)],
            ],
            fmt="o",
            color=LINK_COLOUR,
            capsize=3,
            label="estimate from protected counts (95% interval)",
        )
    ranged = [r for r in result.rates if r.rate is None and r.low is not None]
    for i, r in enumerate(ranged):
        low, high = r.low or 0.0, r.high if r.high is not None else 1.0
        ax.bar(
            xs[r.group],
            high - low,
            bottom=low,
            width=0.35,
            color=SUPPRESSED_COLOUR,
            alpha=0.35,
            hatch="///",
            edgecolor=SUPPRESSED_COLOUR,
            label="withheld: range its suppression leaves (95%)" if i == 0 else None,
        )
    for r in result.rates:
        if r.rate is None:
            low, high = r.low or 0.0, r.high if r.high is not None else 1.0
            short = r.low is not None and high - low < 0.3  # the word sits above the band
            y = 0.5 if r.low is None else (high + 0.02 if short else (low + high) / 2)
            ax.annotate(
                "withheld",
                xy=(xs[r.group], y),
                ha="center",
                va="bottom" if short else "center",
                rotation=90,
                fontsize=7,
                color="#555555",
            )
    if overall is not None:
        ax.axhline(overall, color=THRESHOLD_COLOUR, linestyle=":", label="all records (epoch)")
    q = result.query
    ax.set_xticks(range(len(groups)), groups, fontsize=8, rotation=25)
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.set_ylim(0.0, 1.05)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_ylabel(f"share linked to {q.partner}")
    ax.set_title(f"{q.population} records by {q.attribute}", fontsize=10)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.32), ncol=2, frameon=False)
    return to_data_uri(fig)
