"""The catalogue of reason codes: every code a profile gives is a member, and quality counts codes by it."""

from __future__ import annotations

import ast
import pickle
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from credex.adapters.profile import MappingContext, Profile, Rejection
from credex.adapters.samples import platform_samples, synth
from credex.crypto.pseudonym import Pseudonymizer
from credex.domain import uscc
from credex.domain.persons import validate_ric
from credex.domain.reasons import Dimension, Reason
from credex.domain.uscc import InvalidSubjectCode
from credex.node.feeds.mapping import Reader
from credex.node.quality.report import UnitQuality, dimension, is_wrong_code

ROOT = Path(__file__).resolve().parent.parent
PLATFORMS = ROOT / "adapters" / "samples" / "platforms"
CONTEXT = MappingContext(origin="310000", pseudonymizer=Pseudonymizer(b"k" * 32), today=synth.DEFAULT_ANCHOR)
NATIONAL = Profile.load("national")
VALID = next(synth.generate(synth.SynthSpec(region="310000", rows=1, bad_share=0.0, person_share=1.0))).values


def rejections(path: Path, profile: Profile) -> Iterator[Rejection]:
    reader = Reader(path, profile, CONTEXT, batch_size=100)
    while (batch := reader.next_batch()) is not None:
        yield from (rejection for _, rejection in batch.rejections)


def test_every_code_the_sample_generators_plant_is_in_the_catalogue() -> None:
    planted = {reason for plants in platform_samples.PLANTED.values() for _, reason in plants}
    planted |= {defect for defects in synth.DEFECTS.values() for defect in defects}
    assert {code for code in planted if Reason.known(code) is None} == set()


@pytest.mark.parametrize("platform", sorted(platform_samples.PLANTED))
def test_each_platform_sample_is_rejected_with_catalogue_members_only(platform: str) -> None:
    [path] = PLATFORMS.glob(f"{platform}.*")
    given_reasons = [reason for rejection in rejections(path, Profile.load(platform)) for reason in rejection.reasons]
    assert all(isinstance(reason, Reason) for reason in given_reasons), given_reasons
    assert Counter(given_reasons) == platform_samples.summary(platform).reasons


def test_every_defect_of_the_national_samples_is_rejected_with_its_catalogue_member(tmp_path: Path) -> None:
    kinds: tuple[synth.Kind, ...] = ("penalty", "licence")
    for kind in kinds:
        spec = synth.SynthSpec(region="320000", rows=400, kind=kind, bad_share=0.5, anchor=synth.DEFAULT_ANCHOR)
        made = synth.write(tmp_path / f"{kind}.csv", spec)
        given_reasons = [r for rejection in rejections(tmp_path / f"{kind}.csv", NATIONAL) for r in rejection.reasons]
        assert all(isinstance(reason, Reason) for reason in given_reasons)
        assert Counter(given_reasons) == made.defects


@settings(max_examples=300, deadline=None)
@given(column=st.integers(0, len(VALID) - 1), text=st.text(max_size=30), width=st.integers(-2, 2))
def test_whatever_a_cell_holds_a_rejection_names_only_catalogue_members(column: int, text: str, width: int) -> None:
    header = list(VALID)
    mapper = NATIONAL.bind(header, "rows.csv", CONTEXT)
    values: list[object] = [VALID[name] for name in header]
    values[column] = text
    values = values[: len(values) + width] if width < 0 else values + [""] * width
    outcome = mapper.map_row(values, "line 2")
    if isinstance(outcome, Rejection):
        assert outcome.reasons and all(isinstance(reason, Reason) for reason in outcome.reasons), outcome.reasons


# Where reasons are made: the domain's checks, the profile machinery, table reading, feed mapping.
PRODUCERS = sorted(
    path
    for folder in ("domain", "adapters", "node/feeds")
    for path in (ROOT / folder).rglob("*.py")
    if "samples" not in path.parts and path.name != "reasons.py"
)
# A call that takes a reason, and which of its arguments is the reason.
_REASON_ARGUMENT = {"Problem": 0, "ValueRejected": 0, "InvalidSubjectCode": 0, "reject_unread": 2}


def _called(node: ast.Call) -> str:
    return node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")


def _spelled_out(node: ast.expr) -> bool:
    """Whether an expression builds a reason from text (a literal, an f-string, concatenation, a format call)."""
    if isinstance(node, ast.Tuple):  # a table reader's (reason, message)
        return bool(node.elts) and _spelled_out(node.elts[0])
    return isinstance(node, ast.Constant | ast.JoinedStr | ast.BinOp | ast.Call)


def _misnamed(path: Path) -> Iterator[str]:
    """Where a producer spells a catalogue code out, names a member the catalogue lacks, or builds a reason."""
    codes = {reason.value for reason in Reason}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Constant) and node.value in codes:
            yield f"{node.lineno}: code {node.value!r} spelled out"
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "Reason":
            if node.attr not in Reason.__members__:
                yield f"{node.lineno}: Reason.{node.attr} is not in the catalogue"
        elif isinstance(node, ast.Call):
            position = _REASON_ARGUMENT.get(_called(node))
            arguments = node.args[position : position + 1] if position is not None else []
            if _called(node) == "Row":  # Row(locator, values, problem)
                arguments = node.args[2:3] + [k.value for k in node.keywords if k.arg == "problem"]
            yield from (f"{node.lineno}: a reason built from text" for a in arguments if _spelled_out(a))


def test_the_producers_name_reasons_by_member_and_never_spell_a_code() -> None:
    assert PRODUCERS, "the producers' sources must be found"
    found = [f"{path.relative_to(ROOT)}:{where}" for path in PRODUCERS for where in _misnamed(path)]
    assert found == []


@pytest.mark.parametrize("reason", list(Reason), ids=str)
def test_each_member_says_what_it_means_in_chinese_and_english(reason: Reason) -> None:
    chinese, english = reason.meaning.split(" — ")
    assert re.search(r"[\u4e00-\u9fff]", chinese) and re.search(r"[a-z]{3}", english)
    assert Reason.known(reason.value) is reason
    assert pickle.loads(pickle.dumps(reason)) is reason  # rejections cross from the mapping worker processes


def test_quality_classifies_by_the_catalogue_not_by_the_prefix() -> None:
    for reason in Reason:
        assert (dimension(reason.value), is_wrong_code(reason.value)) == (reason.dimension, reason.wrong_code)
    # A wrong ID number is wrong, but not a 错码: that rate is about 统一社会信用代码.
    assert (dimension("ric.check"), is_wrong_code("ric.check")) == (Dimension.ACCURACY, False)
    assert (dimension("uscc.missing"), is_wrong_code("uscc.missing")) == (Dimension.COMPLETENESS, False)
    # Codes stored by an older version that this one no longer knows count against validity,
    # whatever their prefix says.
    for retired in ("uscc.retired_check", "date.retired", "field.missing_old", "nonsense"):
        assert (dimension(retired), is_wrong_code(retired)) == (Dimension.VALIDITY, False)


def test_a_units_rates_count_each_stored_code_by_its_catalogue_entry() -> None:
    unit = UnitQuality("91310000MA1AAAAA0X", accepted=6, quarantined=4)
    unit.reasons.update(["uscc.check", "uscc.missing", "ric.check", "uscc.retired_check"])
    assert unit.wrong_code_rate == pytest.approx(1 / 10)  # uscc.check
    assert unit.completeness == pytest.approx(9 / 10)  # uscc.missing
    assert unit.accuracy == pytest.approx(8 / 10)  # uscc.check, ric.check
    assert unit.validity == pytest.approx(9 / 10)  # the code no longer in the catalogue


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ -", max_size=20))
def test_every_failure_of_a_subject_code_is_a_catalogued_wrong_code_unless_it_is_empty(raw: str) -> None:
    try:
        uscc.validate(raw)
    except InvalidSubjectCode as exc:
        assert isinstance(exc.reason, Reason)
        assert exc.reason.wrong_code is (exc.reason is not Reason.USCC_MISSING)
    try:
        validate_ric(raw)
    except InvalidSubjectCode as exc:
        assert isinstance(exc.reason, Reason) and not exc.reason.wrong_code
