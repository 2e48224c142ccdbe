"""How a published cell's status is named to a reader, one wording for every page.

The small-number rule (`headcount.protect.sdc`) gives each published entry one of
three statuses, and each has its own honest label: a *released* count is noisy
and rounded; a *primary* suppression is a (noisy) count under the threshold; a
*secondary* suppression was large enough to publish but is withheld so that a
withheld cell cannot be worked out from a margin. The register and the quality
report both name cells through this module, so the same release reads the same
on both.
"""

from __future__ import annotations

from dataclasses import dataclass

from headcount.protect.sdc import PRIMARY, RELEASED, SECONDARY, SdcPolicy

# A withheld entry whose rule the published record does not say (e.g. the
# grand total of a release logged before statuses were kept for it).
WITHHELD = "withheld"


@dataclass(frozen=True, slots=True)
class StatusLabel:
    """``short``: a badge or table-cell label; ``long``: one sentence for a reader."""

    status: str
    short: str
    long: str

    @property
    def withheld(self) -> bool:
        return self.status != RELEASED


def status_label(status: str, policy: SdcPolicy) -> StatusLabel:
    """The label of one entry's ``status`` under ``policy`` (any unknown status is
    shown as plainly withheld, never as released)."""
    base, threshold = policy.rounding_base, policy.threshold
    if status == RELEASED:
        return StatusLabel(
            status,
            f"rounded to {base}",
            f"released: noisy, then rounded to the nearest {base}",
        )
    if status == PRIMARY:
        return StatusLabel(
            status,
            f"withheld: < {threshold}",
            f"withheld by primary suppression: the noisy count was below {threshold}",
        )
    if status == SECONDARY:
        return StatusLabel(
            status,
            "withheld: protects another cell",
            "withheld by secondary suppression: large enough to publish, but withheld "
            "so that a withheld cell cannot be worked out from a total",
        )
    return StatusLabel(WITHHELD, "withheld", "withheld (the rule that withheld it is not recorded)")
