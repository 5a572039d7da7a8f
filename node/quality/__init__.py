"""Data quality per source unit, from what the feeds took in and quarantined."""

from credex.node.quality.report import (
    RATES,
    compute,
    dimension,
    is_wrong_code,
    problem_rows,
    to_message,
    write_problem_csv,
)

__all__ = ["RATES", "compute", "dimension", "is_wrong_code", "problem_rows", "to_message", "write_problem_csv"]
