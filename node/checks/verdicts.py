"""The catalogue's answers about a record, looked up by what of a record the catalogue reads.

A check of a hundred subjects asks the catalogue the same questions about hundreds of
records (which punishments apply here, is it negative, does it exclude 告知承诺), and
the answers depend on a handful of a record's fields only: its kind, its subject's
type, the published list name, the severity, the grade, the commitment's fulfilment
and type and the contract stage (what :class:`credex.domain.measures.Trigger` and
:meth:`~credex.domain.measures.Catalogue.measures_for` read). So each distinct
combination is asked of the catalogue once and the answer kept, per scenario and
province (a :class:`Place`): the catalogue stays the only judge, this only remembers
its verdicts.

Nothing here knows whether a record is in force: standing is read from the store on
every check, so a record revoked or repaired stops counting on the next call. The
catalogue is immutable once loaded, so a verdict can never go stale; the memory is
bounded all the same (list names are free text a platform sends).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from credex.domain.measures import Catalogue, Measure, decided_on
from credex.v1 import record_pb2

MAX_KEPT = 10_000  # verdicts kept per place before they are forgotten and asked again
_CATALOGUES_KEPT = 8  # catalogues with an index (the shipped one, and those tests or operators load)
_PLACES_KEPT = 256  # scenarios times provinces: a few dozen in practice

# (kind, subject type, which details the record carries, the fields of those details a trigger narrows by)
Signature = tuple[int, int, str | None, tuple[str | int, ...]]
# The fields of each kind of details that a trigger, a list type or a hit's scale reads. A record carries
# one kind of details (a oneof), so every other kind's fields read as their defaults: reading only the
# carried kind's fields tells apart exactly the records that reading all of them would (and no fewer).
_NARROWING: dict[str | None, Callable[[record_pb2.Record], tuple[str | int, ...]]] = {
    "black_list": lambda r: (r.black_list.list_name,),
    "red_list": lambda r: (r.red_list.list_name,),
    "penalty": lambda r: (r.penalty.severity,),
    "evaluation": lambda r: (r.evaluation.grade,),
    "commitment": lambda r: (r.commitment.fulfilment, r.commitment.type),
    "contract": lambda r: (r.contract.stage,),
}
# A record in force as the catalogue judged it: the record, its signature and the verdict on it.
Judged = tuple[record_pb2.Record, "Signature", "Verdict"]
_UNDATED = dt.date.max  # a negative record without a decision date: recent whatever the look-back


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the catalogue says of records of one signature in one scenario and province."""

    measures: tuple[Measure, ...]  # the punishments they trigger
    negative: bool  # they count against the subject in an incentive's look-back (不良信息)
    excludes_notify_commit: bool  # while in force, 告知承诺 is not available

    @property
    def is_hit(self) -> bool:
        """A check shows the record: it triggers a measure, or it is negative."""
        return bool(self.measures) or self.negative


def signature(record: record_pb2.Record, kind: int | None = None) -> Signature:
    """Every field of a record the catalogue's triggers and scoping read; nothing else of it decides.

    ``kind``: the record's kind when the caller already has it (the store keeps it in a column).
    """
    which = record.WhichOneof("details")
    narrowing = _NARROWING.get(which)
    return (
        record.kind if kind is None else kind,
        record.subject.type,
        which,
        narrowing(record) if narrowing is not None else (),
    )


class Place:
    """The verdicts for units of one province checking in one scenario: what a check asks, record by record."""

    def __init__(self, catalogue: Catalogue, scenario: str, region: str | None) -> None:
        self.catalogue = catalogue
        self.scenario = scenario
        self.region = region
        self._verdicts: dict[Signature, Verdict] = {}
        self._incentives: dict[tuple[int, dt.date, frozenset[Signature], dt.date | None], tuple[Measure, ...]] = {}

    def verdict(self, record: record_pb2.Record, signed: Signature) -> Verdict:
        """The catalogue's verdict on ``record``, whose signature is ``signed``."""
        found = self._verdicts.get(signed)
        if found is None:
            if len(self._verdicts) >= MAX_KEPT:
                self._verdicts.clear()
            catalogue = self.catalogue
            found = self._verdicts[signed] = Verdict(
                measures=tuple(catalogue.measures_for(record, self.scenario, region=self.region)),
                negative=catalogue.is_negative(record),
                excludes_notify_commit=not catalogue.notify_commit([record]).available,
            )
        return found

    def incentives(
        self,
        judged: Sequence[Judged],
        today: dt.date,
        subject_type: int,
    ) -> tuple[Measure, ...]:
        """The incentives a subject may be offered, given its in-force records of the kinds some trigger names.

        The catalogue reads of them their signatures (triggers, negativity) and, of the
        negative ones, the decision dates: an incentive's look-back is passed when no
        negative record falls inside it, which is to say when the newest one does not
        (one without a date counts as recent). So subjects alike in signatures and in
        their newest negative decision get the same answer, asked once a day; a subject
        with no such record (most subjects) is one of many alike.
        """
        newest: dt.date | None = None
        for record, _, verdict in judged:
            if verdict.negative:
                day = decided_on(record) or _UNDATED
                if newest is None or day > newest:
                    newest = day
        key = (subject_type, today, frozenset(signed for _, signed, _ in judged), newest)
        found = self._incentives.get(key)
        if found is None:
            if len(self._incentives) >= MAX_KEPT:
                self._incentives.clear()
            records = [record for record, _, _ in judged]
            found = self._incentives[key] = tuple(
                self.catalogue.incentives_for(records, self.scenario, today, subject_type, self.region)
            )
        return found


class CatalogueIndex:
    """One catalogue's verdicts, asked once per signature, scenario and province."""

    def __init__(self, catalogue: Catalogue) -> None:
        self.catalogue = catalogue
        # The record kinds some trigger names: records of any other kind never hit, never count in a
        # look-back and never exclude 告知承诺, so a check need not read them at all.
        self.kinds = frozenset(
            {t.kind for m in catalogue.measures for t in m.triggers}
            | {t.kind for triggers in catalogue.trigger_sets.values() for t in triggers}
        )
        self._places: dict[tuple[str, str | None], Place] = {}

    def place(self, scenario: str, region: str | None) -> Place:
        """The verdicts for a unit in ``region`` (its division; only the province decides) checking in ``scenario``."""
        province = region[:2] if region else None
        found = self._places.get((scenario, province))
        if found is None:
            if len(self._places) >= _PLACES_KEPT:
                self._places.clear()
            found = self._places[(scenario, province)] = Place(self.catalogue, scenario, region)
        return found


_INDEXES: dict[int, CatalogueIndex] = {}


def index_of(catalogue: Catalogue) -> CatalogueIndex:
    """The index of ``catalogue``, made on first use (the index holds the catalogue, so its id stays its own)."""
    found = _INDEXES.get(id(catalogue))
    if found is None or found.catalogue is not catalogue:
        while len(_INDEXES) >= _CATALOGUES_KEPT:
            del _INDEXES[next(iter(_INDEXES))]
        found = _INDEXES[id(catalogue)] = CatalogueIndex(catalogue)
    return found
