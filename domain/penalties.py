"""Rules about administrative penalties (行政处罚) that reports and checks apply.

The 简易程序 (summary procedure) matters because Zhejiang's special report leaves its
penalties out while the 2025 national minimum (发改财金〔2025〕565号) keeps them, so
whether a penalty was of that kind is decided here, once, from the published fields.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from credex.v1 import record_pb2

_SIMPLE_TYPES = frozenset({record_pb2.PENALTY_TYPE_WARNING, record_pb2.PENALTY_TYPE_FINE})
# 行政处罚法 第五十一条: decided on the spot, a warning or a fine of at most 200 yuan for a citizen
# or 3,000 yuan for a legal person or other organisation.
SIMPLE_FINE_PERSON = Decimal(200)
SIMPLE_FINE_OTHERS = Decimal(3000)


def simple_procedure(record: record_pb2.Record) -> bool:
    """Whether a penalty is of the kind Art. 51 lets be decided on the spot (简易程序).

    A warning, or a fine within the Art. 51 amounts, and nothing more; a penalty whose
    types or fine are not published is not taken for one (it stays in every report).
    """
    penalty = record.penalty
    types = set(penalty.types)
    if not types or not types <= _SIMPLE_TYPES:
        return False
    if record_pb2.PENALTY_TYPE_FINE not in types:
        return True
    try:
        fine = Decimal(penalty.fine_yuan)
    except InvalidOperation:
        return False
    if not fine.is_finite() or fine < 0:  # NaN would raise on comparison; a negative fine is no amount at all
        return False
    person = record.subject.type == record_pb2.SUBJECT_TYPE_NATURAL_PERSON
    return fine <= (SIMPLE_FINE_PERSON if person else SIMPLE_FINE_OTHERS)
