"""The department file contract: which columns each department's CSV holds.

The synthetic generator writes these files and the party node reads them; both
import this module so the contract lives in one place. Identity columns are only
ever read by the node that holds the file; attribute columns are what queries
may filter or group on, and only where the node's policy approves them.
"""

from __future__ import annotations

from dataclasses import dataclass

DEPARTMENTS: tuple[str, ...] = ("education", "health", "justice", "immigration")

# Columns every department file has. record_id is unique within a file.
IDENTITY_COLUMNS: tuple[str, ...] = (
    "record_id",
    "first_name",
    "last_name",
    "date_of_birth",
    "sex",
    "postcode",
    "address",
)


@dataclass(frozen=True, slots=True)
class Attribute:
    """One attribute column: categorical (with its allowed values) or numeric."""

    name: str
    categories: tuple[str, ...] = ()  # empty for a numeric column
    minimum: float | None = None
    maximum: float | None = None
    # Numeric values are summed under encryption as integers: value * scale,
    # rounded (absence_rate 0.043 -> 43 per mille).
    scale: int = 1

    @property
    def is_numeric(self) -> bool:
        return not self.categories


YES_NO = ("Y", "N")
STATUSES = ("settled", "limited_leave", "limited_leave_nrpf", "asylum_seeker", "no_leave")
LOCAL_AUTHORITIES: tuple[str, ...] = (
    "Birmingham",
    "Bradford",
    "Bristol",
    "Camden",
    "Kent",
    "Leeds",
    "Manchester",
    "Newham",
)

ATTRIBUTES: dict[str, tuple[Attribute, ...]] = {
    "education": (
        Attribute("local_authority", LOCAL_AUTHORITIES),
        Attribute("year_group", tuple(str(y) for y in range(14))),  # 0 = reception
        Attribute("attainment_band", ("below", "expected", "above")),
        Attribute("sen", ("none", "support", "ehcp")),
        Attribute("fsm", YES_NO),
        Attribute("absence_rate", minimum=0.0, maximum=1.0, scale=1000),
    ),
    "health": (
        Attribute("local_authority", LOCAL_AUTHORITIES),
        Attribute("gp_registered", YES_NO),
        Attribute("mental_health_service", YES_NO),
    ),
    "justice": (
        Attribute("local_authority", LOCAL_AUTHORITIES),
        Attribute("sentence", ("custody", "probation", "community")),
    ),
    "immigration": (
        Attribute("local_authority", LOCAL_AUTHORITIES),
        Attribute("immigration_status", STATUSES),
    ),
}


AGE_BANDS: tuple[str, ...] = ("0-4", "5-9", "10-15", "16-17", "18-24", "25-64", "65+")
CHILD_AGE_BANDS: tuple[str, ...] = AGE_BANDS[:4]
ADULT_AGE_BANDS: tuple[str, ...] = AGE_BANDS[4:]

# Attributes every node derives from its own identity columns (never sent
# anywhere): the age band at the federation's reference date, so that a query
# can ask for children or adults without any date of birth leaving the node,
# and the recorded sex, so that link rates and counts can be compared by sex.
SEXES: tuple[str, ...] = ("female", "male", "not_recorded")
DERIVED: tuple[Attribute, ...] = (Attribute("age_band", AGE_BANDS), Attribute("sex", SEXES))


def columns(department: str) -> tuple[str, ...]:
    """All columns, in file order, of ``department``'s CSV."""
    return IDENTITY_COLUMNS + tuple(a.name for a in ATTRIBUTES[department])


def attributes(department: str) -> tuple[Attribute, ...]:
    """Every attribute a query may name at ``department``: file columns, then derived."""
    return ATTRIBUTES[department] + DERIVED


def attribute(department: str, name: str) -> Attribute:
    """The attribute ``name`` of ``department``; KeyError if it has none."""
    for a in attributes(department):
        if a.name == name:
            return a
    raise KeyError(f"{department} has no attribute {name!r}")


def age_band(age_years: int) -> str:
    """The band of ``AGE_BANDS`` holding an age in whole years (>= 0)."""
    if age_years < 0:
        raise ValueError("age must be >= 0")
    for band in AGE_BANDS:
        low, _, high = band.rstrip("+").partition("-")
        if int(low) <= age_years and (not high or age_years <= int(high)):
            return band
    raise AssertionError("AGE_BANDS covers every age")
