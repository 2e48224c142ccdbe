"""The tokens each field of an identity contributes to its CLK: n-grams and whole tokens.

Token kinds are prefixed ("g:" for n-grams, "t:" for whole tokens) so that a
whole-token and an n-gram of the same text can never share positions.
`tokeniser` gives one field's tokens a value at a time; `tokenise` gives the
same tokens for every distinct value of a column at once, over a matrix of
code points.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from headcount.linkage.clk_schema import FieldSpec
from headcount.linkage.normalise import is_uk_postcode

__all__ = ["tokenise", "tokeniser"]

_PAD = ord("_")
_NAME_FIELDS = ("first_name", "last_name", "locality")


def tokenise(spec: FieldSpec, uniques: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Tokens of each distinct value: (value index, token id) pairs and the token texts.

    The texts are those `tokeniser` gives (`_tokens_python` computes them that
    way, one value at a time); this computes n-grams and date parts over a
    matrix of code points instead, and falls back to the per-value path only
    for text it cannot pack (a NUL character, or an alphabet too large for a
    token's characters to fit 64 bits).
    """
    if spec.name == "address":
        # House and flat numbers become tokens of their own: per value.
        return _tokens_python(spec, uniques)
    values = [v.replace(" ", "") for v in uniques] if spec.name in _NAME_FIELDS else list(uniques)
    tokenised = _tokens_numpy(spec, values)
    return tokenised if tokenised is not None else _tokens_python(spec, uniques)


def _tokens_python(
    spec: FieldSpec, uniques: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """`tokenise`, one value at a time through `tokeniser`."""
    tokenise = tokeniser(spec)
    index: dict[str, int] = {}
    rows: list[int] = []
    ids: list[int] = []
    for row, value in enumerate(uniques):
        for token in tokenise(value):
            rows.append(row)
            ids.append(index.setdefault(token, len(index)))
    return np.asarray(rows, dtype=np.int64), np.asarray(ids, dtype=np.int64), list(index)


def _tokens_numpy(
    spec: FieldSpec, values: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
    """`tokenise` over a code-point matrix, or None when the text cannot be packed.

    ``values`` are the distinct values, spaces already removed from names.
    Characters are renumbered 1..A in code-point order (0 = no character), so
    a token of w characters packs into w * bits(A) bits, and comparing packed
    codes compares the strings as Python does (a shorter prefix sorts first).
    """
    index: dict[str, int] = {}
    rows: list[np.ndarray] = []
    ids: list[np.ndarray] = []
    m = len(values)
    text = "".join(values)
    if "\x00" in text:
        return None
    width = max(map(len, values), default=0)
    if width == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), []
    n = spec.ngram
    is_date = spec.name == "date_of_birth"
    chars = np.zeros((m, max(width, 10)), dtype=np.uint32)
    chars[:, :width] = np.array(values, dtype=f"<U{width}").view(np.uint32).reshape(m, width)
    lengths = np.count_nonzero(chars, axis=1)
    alphabet = np.union1d(np.unique(chars), [_PAD])
    alphabet = alphabet[alphabet != 0]
    bits = len(alphabet).bit_length()
    widest = max(n if n > 1 else 0, 4 if is_date else 0)
    if widest * bits > 64:
        return None
    letters = [""] + [chr(c) for c in alphabet.tolist()]

    # Code point -> 1..A (0 stays 0), by table lookup.
    lookup = np.zeros(int(alphabet[-1]) + 1, dtype=np.uint64)
    lookup[alphabet] = np.arange(1, len(alphabet) + 1, dtype=np.uint64)

    def dense(block: np.ndarray) -> np.ndarray:
        found: np.ndarray = lookup[block]
        return found

    def pack(columns: np.ndarray) -> np.ndarray:
        code = np.zeros(columns.shape[0], dtype=np.uint64)
        for j in range(columns.shape[1]):
            code = (code << np.uint64(bits)) | columns[:, j]
        return code

    def decode(code: int, chars_wide: int) -> str:
        mask = (1 << bits) - 1
        return "".join(
            letters[(code >> (bits * (chars_wide - 1 - j))) & mask] for j in range(chars_wide)
        )

    def add(rows_of: np.ndarray, codes: np.ndarray, name: Callable[[int], str]) -> None:
        local, distinct = pd.factorize(codes, sort=False)
        global_ids = np.array(
            [index.setdefault(name(int(c)), len(index)) for c in distinct], dtype=np.int64
        )
        rows.append(rows_of)
        ids.append(global_ids[local])

    present = np.flatnonzero(lengths > 0)
    if n > 1:
        # "_" + value + "_", then every window of n characters; a padded value
        # shorter than n is one token (its window ends in "no character").
        padded = np.zeros((m, max(width + 2, n)), dtype=np.uint32)
        padded[:, 0] = _PAD
        padded[:, 1 : width + 1] = chars[:, :width]
        padded[np.arange(m), lengths + 1] = _PAD
        digits = dense(padded)
        windows = np.where(lengths > 0, np.maximum(lengths + 3 - n, 1), 0)
        span = int(windows.max())
        codes = np.zeros((m, span), dtype=np.uint64)
        for j in range(n):
            codes = (codes << np.uint64(bits)) | digits[:, j : j + span]
        row_of, column = np.nonzero(np.arange(span) < windows[:, None])
        add(row_of, codes[row_of, column], lambda c: "g:" + decode(c, n))
    if is_date:
        # iso[:4], iso[5:7], iso[8:10] and the sorted (day, month) pair; a
        # short value leaves "no character" where Python's slice would end.
        digits = dense(chars[present, :10])
        year, month, day = pack(digits[:, 0:4]), pack(digits[:, 5:7]), pack(digits[:, 8:10])
        add(present, year, lambda c: "t:y:" + decode(c, 4))
        add(present, month, lambda c: "t:m:" + decode(c, 2))
        add(present, day, lambda c: "t:d:" + decode(c, 2))
        pair = (np.minimum(day, month) << np.uint64(2 * bits)) | np.maximum(day, month)
        half = (1 << (2 * bits)) - 1
        add(present, pair, lambda c: f"t:dm:{decode(c >> (2 * bits), 2)}:{decode(c & half, 2)}")
    else:
        # Whole-value tokens: one per distinct value, so plain Python is cheap.
        extra: list[tuple[int, str]] = []
        if n == 1:
            extra += [(r, "t:" + values[r]) for r in present.tolist()]
        if spec.name == "postcode":
            extra += [
                (r, "t:out:" + values[r][:-3])
                for r in present.tolist()
                if is_uk_postcode(values[r])
            ]
        if extra:
            rows.append(np.array([r for r, _ in extra], dtype=np.int64))
            ids.append(
                np.array([index.setdefault(t, len(index)) for _, t in extra], dtype=np.int64)
            )
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), []
    return (
        np.concatenate(rows).astype(np.int64, copy=False),
        np.concatenate(ids),
        list(index),
    )


def tokeniser(spec: FieldSpec) -> Callable[[str], list[str]]:
    """The function splitting one field's value into the tokens that get hashed.

    Token kinds are prefixed ("g:" for n-grams, "t:" for whole tokens) so that a
    whole-token and an n-gram of the same text can never share positions.
    """
    n = spec.ngram
    if spec.name == "date_of_birth":
        return lambda v: _date_tokens(v, n)
    if spec.name == "postcode":
        return lambda v: _postcode_tokens(v, n)
    if spec.name in ("first_name", "last_name", "locality"):
        # Spaces are removed before taking n-grams so "mary ann", "maryann" and
        # "mary-ann" (normalised to "mary ann") encode identically.
        return lambda v: _ngrams(v.replace(" ", ""), n)
    if spec.name == "address":
        return lambda v: _address_tokens(v, n)
    return lambda v: _ngrams(v, n)


def _address_tokens(address: str, n: int) -> list[str]:
    # N-grams of the compacted line tolerate typos and spacing; each number
    # (house, flat) as a whole token makes "12" and "21" differ as a clerk
    # would see them, while a moved family keeps its street's n-grams apart.
    if not address:
        return []
    tokens = _ngrams(address.replace(" ", ""), n) if n > 1 else ["t:" + address]
    return [*tokens, *("t:no:" + w for w in address.split() if w.isdigit())]


def _ngrams(value: str, n: int) -> list[str]:
    if not value:
        return []
    if n == 1:
        return ["t:" + value]
    padded = "_" + value + "_"
    if len(padded) < n:
        return ["g:" + padded]
    return ["g:" + padded[i : i + n] for i in range(len(padded) - n + 1)]


def _date_tokens(iso: str, n: int) -> list[str]:
    # Bigrams of the ISO string tolerate a single mistyped digit; the y/m/d tokens
    # make year, month and day count as units; "dm" (day and month in sorted
    # order) is shared by a date and its day/month transposition, so the most
    # common date error keeps most of the field's bits.
    if not iso:
        return []
    year, month, day = iso[:4], iso[5:7], iso[8:10]
    tokens = _ngrams(iso, n) if n > 1 else []
    tokens += [
        "t:y:" + year,
        "t:m:" + month,
        "t:d:" + day,
        "t:dm:" + ":".join(sorted((day, month))),
    ]
    return tokens


def _postcode_tokens(postcode: str, n: int) -> list[str]:
    # The outward code (district, e.g. "SW1A") as a whole token rewards a family
    # that moved within its district or a typo in the inward code.
    if not postcode:
        return []
    tokens = _ngrams(postcode, n) if n > 1 else ["t:" + postcode]
    if not is_uk_postcode(postcode):
        return tokens  # another country's code: no outward code to add
    return [*tokens, "t:out:" + postcode[:-3]]
