"""Which administrative divisions (GB/T 2260) a record concerns, read from the record itself.

A provincial platform publishes for every city of its province, so a city's supervisor
cannot be given a provincial origin's log whole, nor nothing of it. What a record concerns
is in its codes: a USCC's characters 3–8 are the division of the authority that registered
the holder (GB 32100-2015), so the subject's code says where the subject is registered and
the identifying unit's code (认定单位: the deciding, classifying, listing or awarding
authority) where the unit sits. A natural person (a pseudonym) and a code under no real
division say nothing, and a record that names no division of a city concerns none of them.
"""

from __future__ import annotations

from credex.domain.regions import is_plausible_division, within
from credex.v1 import record_pb2


def concerned_divisions(record: record_pb2.Record) -> set[str]:
    """The divisions of the record's subject and of its identifying units, as far as their codes say."""
    codes = [record.subject.uscc, record.deciding_authority.uscc]
    details = record.WhichOneof("details")
    if details == "black_list":
        codes.append(record.black_list.identifying_unit.uscc)
    elif details == "red_list":
        codes.append(record.red_list.awarding_unit.uscc)
    elif details == "evaluation":
        codes.append(record.evaluation.evaluator.uscc)
    elif details == "risk_class":
        codes.append(record.risk_class.classifying_authority.uscc)
    divisions = set()
    for code in codes:
        if len(code) == 18 and is_plausible_division(code[2:8]):
            divisions.add(code[2:8])
    return divisions


def concerns(record: record_pb2.Record, region: str) -> bool:
    """Whether the record is about a subject registered in ``region`` or was decided by a unit of it."""
    return any(within(division, region) for division in concerned_divisions(record))


def in_region(region: str, origin: str, record: record_pb2.Record) -> bool:
    """Whether a record of ``origin`` is a supervisor's of ``region``: every record of an origin inside the
    region; of an origin wider than it (a city's supervisor, its province's platform) those that concern
    the region; nothing of any other origin. The one rule for streams and lookups alike."""
    if within(origin, region):
        return True
    return within(region, origin) and concerns(record, region)
