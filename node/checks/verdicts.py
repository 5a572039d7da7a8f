"""The catalogue's answers about a record, looked up by what of a record the catalogue reads.

A check of a hundred subjects asks the catalogue the same questions about hundreds of
records (which punishments apply here, is it negative, does it exclude 告知承诺), and
the answers depend on a handful of a record's fields only: its kind, its subject's
type, the published list name, the severity, the grade, the commitment's fulfilment
and type and the contract stage (what :class:`credex.domain.measures.Trigger` and
:meth:`~credex.domain.measures.Catalogue.measures_for` read). So each distinct
combination is asked of the catalogue once and the answer kept, per scenario and
province: the catalogue stays the only judge, this only remembers its verdicts.

Nothing here knows whether a record is in force: standing is read from the store on
every check, so a record revoked or repaired stops counting on the next call. The
catalogue is immutable once loaded, so a verdict can never go stale; the memory is
bounded all the same (list names are free text a platform sends).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from credex.domain.measures import Catalogue, Measure
from credex.v1 import record_pb2

MAX_KEPT = 10_000  # verdicts kept per catalogue before they are forgotten and asked again
_CATALOGUES_KEPT = 8  # catalogues with an index (the shipped one, and those tests or operators load)

Signature = tuple[int, int, str, str, int, int, int, int, int]


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


def signature(record: record_pb2.Record) -> Signature:
    """Every field of a record the catalogue's triggers and scoping read; nothing else of it decides."""
    return (
        record.kind,
        record.subject.type,
        record.black_list.list_name,
        record.red_list.list_name,
        record.penalty.severity,
        record.evaluation.grade,
        record.commitment.fulfilment,
        record.commitment.type,
        record.contract.stage,
    )


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
        self._verdicts: dict[tuple[str, str | None, Signature], Verdict] = {}
        self._incentives: dict[
            tuple[str, str | None, int, dt.date, frozenset[tuple[Signature, str]]], tuple[Measure, ...]
        ] = {}

    def verdict(self, record: record_pb2.Record, scenario: str, region: str | None) -> Verdict:
        """The catalogue's verdict on ``record`` for a unit in ``region`` checking in ``scenario`` (a code)."""
        key = (scenario, region[:2] if region else None, signature(record))
        found = self._verdicts.get(key)
        if found is None:
            if len(self._verdicts) >= MAX_KEPT:
                self._verdicts.clear()
            catalogue = self.catalogue
            found = self._verdicts[key] = Verdict(
                measures=tuple(catalogue.measures_for(record, scenario, region=region)),
                negative=catalogue.is_negative(record),
                excludes_notify_commit=not catalogue.notify_commit([record]).available,
            )
        return found

    def incentives(
        self,
        records: list[record_pb2.Record],
        scenario: str,
        today: dt.date,
        subject_type: int,
        region: str | None,
    ) -> tuple[Measure, ...]:
        """The incentives a subject may be offered, given its in-force records of the kinds some trigger names.

        The catalogue reads of them their signatures (triggers) and decision dates (the
        look-back), so subjects alike in those get the same answer, asked once a day; a
        subject with no such record (most subjects) is one of many alike.
        """
        key = (
            scenario,
            region[:2] if region else None,
            subject_type,
            today,
            frozenset((signature(r), r.decision_date) for r in records),
        )
        found = self._incentives.get(key)
        if found is None:
            if len(self._incentives) >= MAX_KEPT:
                self._incentives.clear()
            found = self._incentives[key] = tuple(
                self.catalogue.incentives_for(records, scenario, today, subject_type, region)
            )
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
