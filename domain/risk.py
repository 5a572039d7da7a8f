"""Market-supervision credit-risk classes (企业信用风险分类): the schemes, their classes, their sampling rates.

A class means something only in its scheme: C of the national A–D scale (国市监信发〔2022〕6号)
and C of Shandong's A–E are different classes, and E exists only in Shandong's. So a record
keeps its class as published, the scheme it was published under and the class's symbol in
that scheme, and a class that is not one of its scheme's is refused at mapping, never moved to
a neighbouring scale (credit-use.md §6: a scale is kept, never mapped silently).

The schemes are data (``risk_schemes.toml`` beside this module): a region with another scale
adds one there. Each class carries the default 双随机 sampling rate a supervision platform
starts from and may replace (credit-use.md, Check rule 9); classes are never published
(不公开), which is the visibility rule's business (node/services/access.py), not this one's.
"""

from __future__ import annotations

import tomllib
import unicodedata
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from credex.domain.normalize import ValueRejected
from credex.domain.reasons import Reason
from credex.errors import CredexError

DEFAULT_SCHEME = "samr-2022"


class RiskSchemesError(CredexError):
    """The list of risk schemes cannot be used; the message says which scheme or class, and why."""


@dataclass(frozen=True, slots=True)
class SamplingRate:
    """The share of a class drawn for random inspection (双随机) in a year, as whole percents, low to high."""

    low_percent: int
    high_percent: int


@dataclass(frozen=True, slots=True)
class RiskClass:
    scheme: str
    symbol: str
    meaning: str
    sampling: SamplingRate


@dataclass(frozen=True, slots=True)
class RiskScheme:
    id: str
    name: str
    basis: str
    classes: tuple[RiskClass, ...]
    published: dict[str, RiskClass]  # a spelling as platforms publish it (folded) -> its class

    def symbols(self) -> list[str]:
        return [c.symbol for c in self.classes]


def _fold(text: str) -> str:
    """How published spellings are compared: full width to half, spaces out, letters upper case (ａ类 = A类)."""
    return "".join(unicodedata.normalize("NFKC", text).split()).upper()


class RiskSchemes:
    """Every scheme the node knows, by id; answers what a published class is in its scheme."""

    def __init__(self, schemes: dict[str, RiskScheme]) -> None:
        self.schemes = schemes

    @classmethod
    def load(cls, path: Path | None = None) -> RiskSchemes:
        """The shipped list, or the file at ``path``; every problem is a :class:`RiskSchemesError`."""
        if path is None:
            text = resources.files("credex.domain").joinpath("risk_schemes.toml").read_text(encoding="utf-8")
            source = "risk_schemes.toml"
        else:
            text, source = path.read_text(encoding="utf-8"), str(path)
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise RiskSchemesError(f"{source}: {exc}") from None
        schemes: dict[str, RiskScheme] = {}
        for index, raw in enumerate(data.get("scheme", [])):
            scheme = _scheme(raw, f"{source}: scheme {index + 1}")
            if scheme.id in schemes:
                raise RiskSchemesError(f"{source}: scheme {scheme.id} is listed twice")
            schemes[scheme.id] = scheme
        if not schemes:
            raise RiskSchemesError(f"{source}: no [[scheme]] listed")
        return cls(schemes)

    @classmethod
    def shipped(cls) -> RiskSchemes:
        return _shipped()

    def classify(self, scheme_id: str, published: str) -> RiskClass:
        """The class ``published`` stands for in scheme ``scheme_id``, or :class:`ValueRejected` saying why not."""
        scheme = self.schemes.get(scheme_id)
        if scheme is None:
            raise ValueRejected(
                Reason.RISK_SCHEME_UNKNOWN,
                f"risk scheme {scheme_id[:40]!r} is not known; known schemes: {', '.join(sorted(self.schemes))}",
            )
        found = scheme.published.get(_fold(published))
        if found is None:
            raise ValueRejected(
                Reason.RISK_CLASS_OUTSIDE_SCHEME,
                f"risk class {published[:40]!r} is not a class of scheme {scheme.id} ({'/'.join(scheme.symbols())})",
            )
        return found

    def sampling(self, scheme_id: str, symbol: str) -> SamplingRate | None:
        """The default sampling rate of a class, or None for a scheme or class this node does not know."""
        scheme = self.schemes.get(scheme_id)
        if scheme is None:
            return None
        return next((c.sampling for c in scheme.classes if c.symbol == symbol), None)


@cache
def _shipped() -> RiskSchemes:
    return RiskSchemes.load()


def _scheme(raw: Any, where: str) -> RiskScheme:
    if not isinstance(raw, dict):
        raise RiskSchemesError(f"{where}: not a table")
    scheme_id, name, basis = (str(raw.get(k, "")).strip() for k in ("id", "name", "basis"))
    if not scheme_id or not name or not basis:
        raise RiskSchemesError(f"{where}: id, name and basis are required")
    classes: list[RiskClass] = []
    published: dict[str, RiskClass] = {}
    for index, entry in enumerate(raw.get("class", [])):
        at = f"{where} ({scheme_id}), class {index + 1}"
        if not isinstance(entry, dict):
            raise RiskSchemesError(f"{at}: not a table")
        symbol, meaning = str(entry.get("symbol", "")).strip(), str(entry.get("meaning", "")).strip()
        if not symbol or not meaning:
            raise RiskSchemesError(f"{at}: symbol and meaning are required")
        rate = entry.get("sampling_percent")
        if (
            not isinstance(rate, list)
            or len(rate) != 2
            or not all(isinstance(p, int) and 0 <= p <= 100 for p in rate)
            or rate[0] > rate[1]
        ):
            raise RiskSchemesError(f"{at}: sampling_percent must be [low, high], whole percents 0–100, low ≤ high")
        risk_class = RiskClass(scheme_id, symbol, meaning, SamplingRate(rate[0], rate[1]))
        if any(c.symbol == symbol for c in classes):
            raise RiskSchemesError(f"{at}: class {symbol} is listed twice")
        classes.append(risk_class)
        for spelling in [symbol, *entry.get("published", [])]:
            key = _fold(str(spelling))
            if published.get(key, risk_class) != risk_class:
                raise RiskSchemesError(f"{at}: {spelling!r} already stands for class {published[key].symbol}")
            published[key] = risk_class
    if not classes:
        raise RiskSchemesError(f"{where} ({scheme_id}): no [[scheme.class]] listed")
    return RiskScheme(scheme_id, name, basis, tuple(classes), published)
