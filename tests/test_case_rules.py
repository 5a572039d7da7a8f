"""Case rules as data (domain/case_rules.toml) and repair eligibility, explained (credit-use.md, Repair 2)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from typer.testing import CliRunner

from credex.domain.case_rules import CaseRules, CaseRulesError, repair_eligibility
from credex.domain.workdays import add_working_days
from credex.node.cli.app import app
from credex.v1 import record_pb2

RULES = CaseRules.shipped()
GIVEN = {"proof_of_duty": "缴款凭证", "commitment": "信用承诺书"}


def penalty(severity: record_pb2.Severity.ValueType, decided: str, earliest: str = "") -> record_pb2.Record:
    return record_pb2.Record(
        record_id="320000-CF-1",
        origin="320000",
        kind=record_pb2.KIND_PENALTY,
        decision_date=decided,
        publicity=record_pb2.PublicityWindow(earliest_repair=earliest),
        penalty=record_pb2.PenaltyDetails(severity=severity),
    )


def test_each_region_has_the_references_deadlines_and_others_fall_back_to_the_default() -> None:
    shanghai, zhejiang, jiangsu = RULES.of("310000"), RULES.of("330000"), RULES.of("320000")
    assert (shanghai.objection_accept_days, shanghai.objection_provider_days, shanghai.objection_max_days) == (1, 5, 0)
    assert (zhejiang.objection_platform_days, zhejiang.objection_review_days, zhejiang.objection_max_days) == (5, 5, 20)
    assert (jiangsu.objection_accept_days, jiangsu.objection_platform_days) == (2, 2)
    assert jiangsu.objection_provider_days == 10
    assert (jiangsu.repair_accept_days, jiangsu.repair_result_days, jiangsu.repair_propagation_days) == (3, 10, 3)


def test_a_rules_file_with_a_mistake_is_refused_naming_it(tmp_path: Path) -> None:
    shipped = (Path(__file__).parents[1] / "domain" / "case_rules.toml").read_text(encoding="utf-8")
    for broken, named in (
        (shipped.replace("repair_accept_days = 3", "repair_accept_days = -3"), "repair_accept_days"),
        (shipped + "\n[regions.31]\nobjection_accept_days = 1\n", "31"),
        (shipped + "\n[regions.320000]\nobjection_accept_dayz = 1\n", "objection_accept_dayz"),
        (shipped + "\n[elsewhere]\n", "elsewhere"),
        ("objection_accept_days = [", "case_rules"),
    ):
        path = tmp_path / "case_rules.toml"
        path.write_text(broken, encoding="utf-8")
        with pytest.raises(CaseRulesError, match=named):
            CaseRules.load(path)


def test_the_minimum_period_follows_the_severity_the_source_states() -> None:
    rules = RULES.of("320000")
    today = dt.date(2026, 11, 22)
    minor = repair_eligibility(penalty(record_pb2.SEVERITY_MINOR, "2026-11-20"), rules, today, **GIVEN)
    assert minor.allowed and minor.earliest == dt.date(2026, 11, 20)
    general = repair_eligibility(penalty(record_pb2.SEVERITY_GENERAL, "2026-08-31"), rules, today, **GIVEN)
    assert not general.allowed and general.earliest == dt.date(2026, 11, 30) and "too early" in general.reason
    serious = repair_eligibility(penalty(record_pb2.SEVERITY_SERIOUS, "2025-11-22"), rules, today, **GIVEN)
    assert serious.allowed and serious.earliest == dt.date(2026, 11, 22)
    own_date = repair_eligibility(
        penalty(record_pb2.SEVERITY_SERIOUS, "2026-01-05", earliest="2026-07-05"), rules, today, **GIVEN
    )
    assert own_date.allowed and "earliest repair date" in own_date.reason


def test_what_cannot_be_repaired_or_decided_says_why() -> None:
    rules = RULES.of("320000")
    today = dt.date(2026, 11, 22)
    unstated = repair_eligibility(penalty(record_pb2.SEVERITY_UNSPECIFIED, "2025-01-01"), rules, today, **GIVEN)
    assert not unstated.allowed and "never derives" in unstated.reason
    licence = record_pb2.Record(kind=record_pb2.KIND_LICENCE, decision_date="2025-01-01")
    assert "not repairable" in repair_eligibility(licence, rules, today, **GIVEN).reason
    debtor = record_pb2.Record(kind=record_pb2.KIND_DISHONEST_DEBTOR, decision_date="2025-01-01")
    assert "not repairable" in repair_eligibility(debtor, rules, today, **GIVEN).reason
    special = record_pb2.Record(
        kind=record_pb2.KIND_BLACK_LIST,
        decision_date="2025-03-01",
        black_list=record_pb2.BlackListDetails(list_name="安全生产领域严重失信主体名单", listed_on="2025-03-01"),
    )
    verdict = repair_eligibility(special, rules, today, **GIVEN)
    assert not verdict.allowed and "特定严重失信 (安全生产)" in verdict.reason
    listed_later = record_pb2.Record()
    listed_later.CopyFrom(special)
    listed_later.black_list.listed_on = listed_later.decision_date = "2026-05-01"
    assert "too early" in repair_eligibility(listed_later, rules, today, **GIVEN).reason  # serious: a year
    incomplete = repair_eligibility(penalty(record_pb2.SEVERITY_MINOR, "2026-01-01"), rules, today, proof_of_duty="",
                                    commitment="")  # fmt: skip
    assert not incomplete.allowed and incomplete.reason.startswith("incomplete: proof_of_duty and commitment missing")


def test_deadlines_count_working_days_on_the_official_calendar() -> None:
    # 2026-02-14 (Saturday) is an adjusted working day before the Spring Festival holiday (15-23 February).
    assert add_working_days(dt.date(2026, 2, 13), 1) == dt.date(2026, 2, 14)
    assert add_working_days(dt.date(2026, 2, 13), 2) == dt.date(2026, 2, 24)
    assert add_working_days(dt.date(2026, 9, 18), 1) == dt.date(2026, 9, 20)  # a Sunday made a working day
    assert add_working_days(dt.date(2026, 11, 20), 0) == dt.date(2026, 11, 20)


def test_credex_cases_rules_shows_each_region_or_names_the_mistake(tmp_path: Path) -> None:
    shown = CliRunner().invoke(app, ["cases", "rules"])
    assert shown.exit_code == 0 and "310000" in shown.output and "330000" in shown.output, shown.output
    broken = tmp_path / "rules.toml"
    broken.write_text("[default]\nobjection_accept_days = 'two'\n", encoding="utf-8")
    refused = CliRunner().invoke(app, ["cases", "rules", str(broken)])
    assert refused.exit_code == 1 and "objection_accept_days" in refused.output
