"""The measures catalogue (联合奖惩措施清单) is data an operator edits, and a check can only answer from it.

Specification: credit-use.md, "What a Check feature must do", rules 4 and 6 —
only catalogue measures, each with its basis; incentives only without an
in-force negative record in the look-back; 告知承诺 not available on a serious
list or with an unrepaired false commitment. A malformed catalogue file is an
error naming the file and line, and nothing is loaded from it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from credex.domain.measures import (
    INCENTIVE,
    PUNISHMENT,
    TARGETS,
    Catalogue,
    CatalogueError,
    Measure,
    UnknownScenario,
    shipped_folder,
)
from credex.errors import CredexError
from credex.node.cli import app
from credex.v1 import record_pb2

runner = CliRunner()
TODAY = dt.date(2026, 6, 1)
ENTITY = record_pb2.SUBJECT_TYPE_LEGAL_ENTITY
PERSON = record_pb2.SUBJECT_TYPE_NATURAL_PERSON


def record(
    kind: record_pb2.Kind.ValueType,
    decided: str = "2026-01-10",
    subject_type: record_pb2.SubjectType.ValueType = ENTITY,
    **details: object,
) -> record_pb2.Record:
    """A record of one kind with its details set (e.g. ``black_list={"list_name": …}``)."""
    made = record_pb2.Record(record_id=f"r-{kind}-{decided}", origin="320000", kind=kind, decision_date=decided)
    made.subject.type = subject_type
    for name, values in details.items():
        getattr(made, name).SetInParent()
        for key, value in dict(values).items():  # type: ignore[call-overload]
            setattr(getattr(made, name), key, value)
    return made


def black_list(name: str = "江苏省严重失信主体名单", **kw: object) -> record_pb2.Record:
    return record(record_pb2.KIND_BLACK_LIST, black_list={"list_name": name}, **kw)  # type: ignore[arg-type]


def penalty(severity: record_pb2.Severity.ValueType, decided: str = "2026-01-10") -> record_pb2.Record:
    return record(record_pb2.KIND_PENALTY, decided, penalty={"severity": severity})


def commitment(fulfilment: record_pb2.Fulfilment.ValueType) -> record_pb2.Record:
    return record(record_pb2.KIND_COMMITMENT, commitment={"fulfilment": fulfilment})


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return Catalogue.load()


def ids(measures: list[Measure]) -> set[str]:
    return {m.id for m in measures}


# ---------------------------------------------------------------- the shipped catalogue


def test_the_shipped_catalogue_loads_and_every_measure_has_a_basis_known_scenarios_and_targets(
    catalogue: Catalogue,
) -> None:
    assert len(catalogue.measures) >= 20 and {"行政许可", "政府采购", "招标投标", "财政资金"} <= set(
        catalogue.scenarios
    )
    for measure in catalogue.measures:
        assert measure.basis.document, measure.id
        assert measure.scenarios and all(s == "*" or s in catalogue.scenarios for s in measure.scenarios), measure.id
        assert measure.targets and set(measure.targets) <= set(TARGETS), measure.id
        assert measure.category in (PUNISHMENT, INCENTIVE)
        assert (measure.lookback_years is not None) == (measure.category == INCENTIVE)
        if measure.category == PUNISHMENT:
            assert measure.triggers, measure.id
        assert ":" in measure.source and measure.edition and measure.region


def test_triggers_map_onto_real_record_kinds_and_fields(catalogue: Catalogue) -> None:
    kinds = set(record_pb2.Kind.values())
    for measure in catalogue.measures:
        for trigger in measure.triggers:
            assert trigger.kind in kinds and trigger.kind != record_pb2.KIND_UNSPECIFIED
            assert trigger.severities <= set(record_pb2.Severity.values())
            assert trigger.grades <= set(record_pb2.Grade.values())
            assert trigger.fulfilments <= set(record_pb2.Fulfilment.values())
            assert trigger.contract_stages <= set(record_pb2.ContractStage.values())
            assert all(list_type.kind == trigger.kind for list_type in trigger.list_types)


def test_scenarios_resolve_by_code_or_alias_and_an_unknown_one_is_a_credex_error(catalogue: Catalogue) -> None:
    assert catalogue.scenario("评先评优").code == "表彰奖励"
    assert catalogue.scenario("公职录用").code == "人员招录任用"
    assert catalogue.scenario("政府采购").english == "government procurement"
    with pytest.raises(UnknownScenario, match="unknown scenario '买菜'") as raised:
        catalogue.scenario("买菜")
    assert isinstance(raised.value, CredexError)
    with pytest.raises(UnknownScenario):
        catalogue.measures_for(black_list(), "买菜")


# ---------------------------------------------------------------- measures for a record


def test_a_serious_list_entry_in_procurement_gets_exactly_the_catalogues_procurement_measures(
    catalogue: Catalogue,
) -> None:
    found = catalogue.measures_for(black_list(), "政府采购")
    assert ids(found) == {
        "SH-30-公共资源交易扣分",
        "SH-31-限制市场准入",
        "ZJ-26-限制政府采购招投标土地",
        "ZJ-26-限制高消费",
    }
    assert all(m in catalogue.measures and m.basis.document for m in found)
    assert str(catalogue.measure("ZJ-26-限制政府采购招投标土地").basis).startswith(
        "浙江省公共信用信息管理条例 第二十六条"
    )
    # A Shanghai office applies national, Delta and Shanghai measures only.
    assert ids(catalogue.measures_for(black_list(), "政府采购", region="310115")) == {
        "SH-30-公共资源交易扣分",
        "SH-31-限制市场准入",
    }


def test_every_record_kind_in_several_scenarios_gets_only_measures_the_catalogue_lists_for_it(
    catalogue: Catalogue,
) -> None:
    records = [
        black_list(),
        record(record_pb2.KIND_DISHONEST_DEBTOR, dishonest_debtor={"court": "南京市中级人民法院"}),
        penalty(record_pb2.SEVERITY_SERIOUS),
        penalty(record_pb2.SEVERITY_GENERAL),
        commitment(record_pb2.FULFILMENT_BROKEN),
        commitment(record_pb2.FULFILMENT_KEPT),
        record(record_pb2.KIND_EVALUATION, evaluation={"grade": record_pb2.GRADE_D}),
        record(record_pb2.KIND_EVALUATION, evaluation={"grade": record_pb2.GRADE_A}),
        record(record_pb2.KIND_CONTRACT, contract={"stage": record_pb2.CONTRACT_STAGE_BREACH}),
        record(record_pb2.KIND_RED_LIST, red_list={"list_name": "守信激励对象名单"}),
        record(record_pb2.KIND_LICENCE, licence={"content": "食品经营"}),
    ]
    for scenario in ("政府采购", "行政许可", "表彰奖励", "行政检查", "财政资金"):
        for rec in records:
            code = catalogue.scenario(scenario).code
            expected = {
                m.id
                for m in catalogue.measures
                if m.category == PUNISHMENT
                and ("*" in m.scenarios or code in m.scenarios)
                and any(t.matches(rec) for t in m.triggers)
            }
            assert ids(catalogue.measures_for(rec, scenario)) == expected
    # Records that are no fault trigger nothing anywhere.
    for harmless in records[5], records[7], records[9], records[10]:
        assert all(not catalogue.measures_for(harmless, s) for s in catalogue.scenarios)
    # Only the court's list restricts high consumption nationally; a 失信被执行人 does, in every scenario.
    debtor = records[1]
    assert "CN-2024-I-限制高消费" in ids(catalogue.measures_for(debtor, "科研管理"))
    assert "CN-2024-I-限制高消费" not in ids(catalogue.measures_for(black_list(), "科研管理"))


def test_a_measure_aimed_at_organisations_is_not_returned_for_a_natural_person(catalogue: Catalogue) -> None:
    person = penalty(record_pb2.SEVERITY_GENERAL)
    person.subject.type = PERSON
    found = ids(catalogue.measures_for(person, "行政检查"))
    assert "SH-30-提高检查频次" not in found and "ZJ-23-加强检查" not in found
    assert "SH-30-取消便利措施" in found


# ---------------------------------------------------------------- incentives and 告知承诺


def test_incentives_need_no_in_force_negative_record_inside_the_look_back(catalogue: Catalogue) -> None:
    red = record(record_pb2.KIND_RED_LIST, red_list={"list_name": "上海市守信激励对象名单"})
    clean = ids(catalogue.incentives_for([], "行政许可", TODAY))
    assert clean == {"CN-2016-激励-绿色通道", "CN-2016-激励-容缺受理"}  # a clean record alone (国发〔2016〕33号)
    honoured = ids(catalogue.incentives_for([red], "行政许可", TODAY))
    assert honoured == clean | {"SH-29-优先简化审批"}  # the Shanghai incentive needs the red list
    recent = penalty(record_pb2.SEVERITY_GENERAL, decided="2024-06-02")  # inside 3 years of TODAY
    assert catalogue.incentives_for([red, recent], "行政许可", TODAY) == []
    old = penalty(record_pb2.SEVERITY_GENERAL, decided="2023-05-31")  # in force, but before the look-back
    assert ids(catalogue.incentives_for([red, old], "行政许可", TODAY)) == honoured
    undated = penalty(record_pb2.SEVERITY_GENERAL, decided="")
    assert catalogue.incentives_for([red, undated], "行政许可", TODAY) == []
    assert all(m.category == INCENTIVE for m in catalogue.incentives_for([red], "行政检查", TODAY))
    assert catalogue.is_negative(commitment(record_pb2.FULFILMENT_BROKEN))
    assert not catalogue.is_negative(red)


def test_notify_and_commit_is_unavailable_on_a_serious_list_or_with_an_unrepaired_broken_commitment(
    catalogue: Catalogue,
) -> None:
    assert catalogue.notify_commit([]).available
    assert catalogue.notify_commit(
        [penalty(record_pb2.SEVERITY_GENERAL), commitment(record_pb2.FULFILMENT_KEPT)]
    ).available
    listed = black_list()
    refused = catalogue.notify_commit([listed, penalty(record_pb2.SEVERITY_GENERAL)])
    assert not refused.available and refused.excluded_by == (listed.record_id,)
    assert not catalogue.notify_commit([commitment(record_pb2.FULFILMENT_BROKEN)]).available
    debtor = record(record_pb2.KIND_DISHONEST_DEBTOR)
    assert not catalogue.notify_commit([debtor]).available


# ---------------------------------------------------------------- malformed files

MEASURE = """
[[measure]]
id = "X-1"
name = "测试措施"
category = "惩戒"
targets = ["legal_entity"]
implementing_body = "测试部门"
scenarios = ["政府采购"]
basis = {{ document = "测试条例", article = "第一条" }}
{extra}
[[measure.trigger]]
kind = "black_list"
list_types = ["{list_type}"]
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A copy of the shipped catalogue to break."""
    copy = tmp_path / "catalogue"
    shutil.copytree(Path(str(shipped_folder())), copy)
    return copy


def add_measure_file(folder: Path, body: str) -> Path:
    path = folder / "measures" / "zz-operator.toml"
    path.write_text('[catalogue]\ntitle = "操作员补充"\nedition = "2026"\nregion = "310000"\n' + body, encoding="utf-8")
    return path


def problems_of(folder: Path) -> list[str]:
    digest = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*.toml")}
    with pytest.raises(CatalogueError) as raised:
        Catalogue.load(folder)
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*.toml")} == digest  # nothing changed
    return str(raised.value).splitlines()


def line_of(path: Path, text: str) -> int:
    return next(n for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if text in line)


def test_an_unknown_list_type_is_an_error_at_its_line(folder: Path) -> None:
    path = add_measure_file(folder, MEASURE.format(extra="", list_type="外星人名单"))
    (problem,) = problems_of(folder)
    assert problem.startswith(
        f"{path}:{line_of(path, '外星人名单')}: measure X-1, trigger #1: unknown list type '外星人名单'"
    )


def test_a_missing_basis_is_an_error_at_the_measure(folder: Path) -> None:
    body = MEASURE.format(extra="", list_type="严重失信主体名单").replace(
        'basis = { document = "测试条例", article = "第一条" }\n', ""
    )
    path = add_measure_file(folder, body)
    (problem,) = problems_of(folder)
    assert problem.startswith(f"{path}:{line_of(path, '[[measure]]')}: measure X-1 has no basis")
    empty = MEASURE.format(extra="", list_type="严重失信主体名单").replace('document = "测试条例", ', 'document = "", ')
    add_measure_file(folder, empty)
    (problem,) = problems_of(folder)
    assert (
        problem == f"{path}:{line_of(path, 'basis =')}: measure X-1: basis has no document"
        " (the law, regulation or policy document it rests on)"
    )


def test_an_unknown_scenario_and_an_unknown_trigger_field_are_errors_at_their_lines(folder: Path) -> None:
    body = MEASURE.format(extra="", list_type="严重失信主体名单").replace('["政府采购"]', '["政府采购", "买菜"]')
    body = body.replace('kind = "black_list"', 'kind = "black_list"\ncolour = "黑"')
    path = add_measure_file(folder, body)
    problems = problems_of(folder)
    assert problems[0].startswith(f"{path}:{line_of(path, '买菜')}: measure X-1: unknown scenario '买菜'")
    assert problems[1] == f"{path}:{line_of(path, 'colour')}: measure X-1, trigger #1: unknown field 'colour'"
    add_measure_file(folder, MEASURE.format(extra="", list_type="严重失信主体名单").replace("black_list", "gossip"))
    (problem,) = problems_of(folder)
    assert problem.startswith(
        f"{path}:{line_of(path, 'gossip')}: measure X-1, trigger #1: unknown record kind 'gossip'"
    )


def test_a_duplicate_id_is_an_error_naming_both_places(folder: Path) -> None:
    path = add_measure_file(
        folder, MEASURE.format(extra="", list_type="严重失信主体名单").replace("X-1", "SH-31-限制荣誉")
    )
    (problem,) = problems_of(folder)
    first = Catalogue.shipped().measure("SH-31-限制荣誉").source.rsplit(":", 1)[1]
    assert problem.startswith(f"{path}:{line_of(path, 'id = ')}: duplicate measure id 'SH-31-限制荣誉', first at ")
    assert problem.endswith(f"shanghai.toml:{first}")


def test_broken_toml_is_an_error_at_its_line_and_every_problem_is_reported_at_once(folder: Path) -> None:
    path = add_measure_file(folder, '\n[[measure]]\nid = "X-2\nname = "断"\n')
    scenarios = folder / "scenarios.toml"
    scenarios.write_text(
        scenarios.read_text(encoding="utf-8") + '\n[[scenario]]\ncode = "政府采购"\nname = "重"\nenglish = "dup"\n',
        encoding="utf-8",
    )
    problems = problems_of(folder)
    assert any(p.startswith(f"{path}:{line_of(path, 'id = ')}: not valid TOML") for p in problems), problems
    assert any(p.startswith(f"{scenarios}:") and "'政府采购' already names scenario" in p for p in problems), problems


def test_a_punishment_with_a_lookback_or_a_bad_category_is_refused(folder: Path) -> None:
    path = add_measure_file(
        folder, MEASURE.format(extra="lookback_years = 3", list_type="严重失信主体名单").replace("惩戒", "表扬")
    )
    problems = problems_of(folder)
    assert f"{path}:{line_of(path, 'category')}: measure X-1: category must be 惩戒 or 激励" in problems


def test_an_operators_valid_addition_loads_beside_the_shipped_measures(folder: Path) -> None:
    add_measure_file(folder, MEASURE.format(extra='confidence = "H"', list_type="政府采购严重违法失信"))
    edited = Catalogue.load(folder)
    assert len(edited.measures) == len(Catalogue.shipped().measures) + 1
    listed = black_list("政府采购严重违法失信行为记录名单")
    assert "X-1" in ids(edited.measures_for(listed, "政府采购"))
    assert "X-1" not in ids(edited.measures_for(black_list("重大税收违法失信主体名单"), "政府采购"))


# ---------------------------------------------------------------- the command line


def test_measures_list_shows_id_name_category_basis_and_scenarios() -> None:
    result = runner.invoke(app, ["measures", "list", "--scenario", "政府采购"])
    assert result.exit_code == 0, result.output
    assert "ZJ-26-限制政府采购招投标土地" in result.output and "第二十六条" in result.output
    assert "SH-31-限制荣誉" not in result.output
    unknown = runner.invoke(app, ["measures", "list", "--scenario", "买菜"])
    assert unknown.exit_code == 1 and "unknown scenario '买菜'" in unknown.output


def test_measures_check_exits_0_with_a_summary_or_1_with_file_and_line_per_problem(folder: Path) -> None:
    clean = runner.invoke(app, ["measures", "check", str(folder)])
    assert clean.exit_code == 0, clean.output
    assert "no problems" in clean.output and f"{len(Catalogue.shipped().measures)} measures" in clean.output
    path = add_measure_file(folder, MEASURE.format(extra="", list_type="外星人名单"))
    broken = runner.invoke(app, ["measures", "check", str(folder)])
    assert broken.exit_code == 1
    assert f"{path}:{line_of(path, '外星人名单')}: measure X-1, trigger #1: unknown list type" in broken.output
    listed = runner.invoke(app, ["measures", "list", "--dir", str(folder)])
    assert listed.exit_code == 1 and "unknown list type" in listed.output


def test_a_scenario_names_the_legal_bases_that_allow_checking_persons_without_their_authorization(
    catalogue: Catalogue,
) -> None:
    hiring = catalogue.scenario("公职录用")
    assert hiring.allows_persons_by("中华人民共和国公务员法 第二十六条")
    assert hiring.allows_persons_by("中华人民共和国公务员法第二十六条")  # spacing does not decide
    assert not hiring.allows_persons_by("中华人民共和国政府采购法 第二十二条")  # another scenario's basis
    assert not hiring.allows_persons_by("")
    assert not catalogue.scenario("表彰奖励").allows_persons_by("中华人民共和国公务员法 第二十六条")


def test_person_legal_bases_must_be_a_list_of_non_empty_texts(folder: Path) -> None:
    scenarios = folder / "scenarios.toml"
    text = scenarios.read_text(encoding="utf-8")
    scenarios.write_text(
        text.replace('english = "awards and honours"', 'english = "awards and honours"\nperson_legal_bases = "法"'),
        encoding="utf-8",
    )
    (problem,) = problems_of(folder)
    line = line_of(scenarios, 'person_legal_bases = "法"')
    assert problem == (f"{scenarios}:{line}: scenario 表彰奖励: person_legal_bases must be a list of strings")
    scenarios.write_text(
        text.replace('english = "awards and honours"', 'english = "awards and honours"\nperson_legal_bases = [" "]'),
        encoding="utf-8",
    )
    (problem,) = problems_of(folder)
    assert problem.endswith("scenario 表彰奖励: person_legal_bases has an empty basis")
