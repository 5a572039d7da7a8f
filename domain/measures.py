"""The measures catalogue (联合奖惩措施清单): which published measures a record triggers, where, on what basis.

Public bodies may not punish beyond the published measures, and a measure that
has not been published may not be applied (全国失信惩戒措施基础清单; 上海条例
第三十二条; 浙江条例 第二十八条). So the catalogue is data an operator edits, not
code: TOML files in one folder, shipped seeded from the reference texts
(``credex/domain/catalogue``), and a check can only ever answer with a measure
found there, each with its legal basis.

The folder holds:

- ``scenarios.toml``: the scenario codes a check names (``[[scenario]]``: code,
  name, english, aliases, sources);
- ``lists.toml``: list types a trigger may name (``[[list_type]]``: code, name,
  record kind, fragments of the published list name);
- ``triggers.toml``: named trigger sets shared by many measures
  (``[[trigger_set]]`` with ``[[trigger_set.trigger]]`` tables). Two are
  required, because the catalogue's own rules read them: ``不良信息`` (what
  counts as a negative record in an incentive's look-back) and ``告知承诺排除``
  (what makes 告知承诺 unavailable);
- ``measures/*.toml``: one file per edition or region, a ``[catalogue]`` table
  (title, edition, region) and ``[[measure]]`` tables (see :class:`Measure`).

:meth:`Catalogue.load` reads and validates a folder as a whole: every problem
is reported at once as ``file:line: message`` in one :class:`CatalogueError`,
and nothing is half-loaded. The catalogue answers three questions, all pure:
:meth:`Catalogue.measures_for` (the punishments one in-force record triggers in a
scenario), :meth:`Catalogue.incentives_for` (the incentives a subject may be
offered given all its in-force records and the look-back), and
:meth:`Catalogue.notify_commit` (whether 告知承诺 is available). Deciding which
records are in force (window, repair, revocation, objections) is the caller's
job, by the origin region's rules; the catalogue only maps records to measures.
"""

from __future__ import annotations

import datetime as dt
import re
import tomllib
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from credex.domain.publicity import add_months
from credex.domain.regions import is_origin_code
from credex.errors import CredexError
from credex.v1 import record_pb2

ALL_SCENARIOS = "*"
NEGATIVE_SET = "不良信息"
NOTIFY_COMMIT_EXCLUSION_SET = "告知承诺排除"
DEFAULT_LOOKBACK_YEARS = 3  # 国发〔2016〕33号: no adverse record in three consecutive years

PUNISHMENT = "惩戒"
INCENTIVE = "激励"
# The 基础清单's three categories of punishment measures.
CLASSES = {"I": "减损权益或增加义务", "II": "管理措施", "III": "公共机构以外的组织自主采取"}
# Who a measure is aimed at; the roles are persons linked to an organisation (上海条例 第三十三条, 浙江条例 第二十七条).
TARGETS = {
    "legal_entity": "法人及非法人组织",
    "individual_business": "个体工商户",
    "natural_person": "自然人",
    "legal_representative": "法定代表人",
    "principal": "主要负责人",
    "directly_responsible": "直接责任人",
    "actual_controller": "实际控制人",
}
_ROLES = ("legal_representative", "principal", "directly_responsible", "actual_controller")
_TARGETS_OF_SUBJECT: dict[int, frozenset[str]] = {
    record_pb2.SUBJECT_TYPE_LEGAL_ENTITY: frozenset(("legal_entity", *_ROLES)),
    record_pb2.SUBJECT_TYPE_INDIVIDUAL_BUSINESS: frozenset(("individual_business", *_ROLES)),
    record_pb2.SUBJECT_TYPE_NATURAL_PERSON: frozenset(("natural_person",)),
}
CONFIDENCE = ("H", "M", "L")
SPECIAL_REGIONS = ("national", "yangtze-delta")

# Record kinds a trigger may name, and which narrowing fields each accepts.
TRIGGER_KINDS: dict[str, int] = {
    "penalty": record_pb2.KIND_PENALTY,
    "black_list": record_pb2.KIND_BLACK_LIST,
    "red_list": record_pb2.KIND_RED_LIST,
    "dishonest_debtor": record_pb2.KIND_DISHONEST_DEBTOR,
    "commitment": record_pb2.KIND_COMMITMENT,
    "evaluation": record_pb2.KIND_EVALUATION,
    "contract": record_pb2.KIND_CONTRACT,
}
_KIND_NAMES = {number: name for name, number in TRIGGER_KINDS.items()}
_LISTED_KINDS = frozenset({record_pb2.KIND_BLACK_LIST, record_pb2.KIND_RED_LIST, record_pb2.KIND_DISHONEST_DEBTOR})
# field -> (the kind it narrows, its vocabulary: published word -> proto enum value)
_NARROWERS: dict[str, tuple[int, dict[str, int]]] = {
    "severities": (
        record_pb2.KIND_PENALTY,
        {"轻微": record_pb2.SEVERITY_MINOR, "一般": record_pb2.SEVERITY_GENERAL, "严重": record_pb2.SEVERITY_SERIOUS},
    ),
    "grades": (
        record_pb2.KIND_EVALUATION,
        {"A": record_pb2.GRADE_A, "B": record_pb2.GRADE_B, "C": record_pb2.GRADE_C, "D": record_pb2.GRADE_D},
    ),
    "fulfilments": (
        record_pb2.KIND_COMMITMENT,
        {
            "履约中": record_pb2.FULFILMENT_PENDING,
            "已履约": record_pb2.FULFILMENT_KEPT,
            "未履约": record_pb2.FULFILMENT_BROKEN,
        },
    ),
    "commitment_types": (
        record_pb2.KIND_COMMITMENT,
        {
            "审批替代型": record_pb2.COMMITMENT_TYPE_APPROVAL_SUBSTITUTE,
            "容缺受理型": record_pb2.COMMITMENT_TYPE_TOLERANT_ACCEPTANCE,
            "证明事项型": record_pb2.COMMITMENT_TYPE_CERTIFICATION,
            "信用修复型": record_pb2.COMMITMENT_TYPE_CREDIT_REPAIR,
            "行业自律型": record_pb2.COMMITMENT_TYPE_SELF_DISCIPLINE,
            "主动型": record_pb2.COMMITMENT_TYPE_VOLUNTARY,
            "其他": record_pb2.COMMITMENT_TYPE_OTHER,
        },
    ),
    "contract_stages": (
        record_pb2.KIND_CONTRACT,
        {
            "签订": record_pb2.CONTRACT_STAGE_SIGNING,
            "履行": record_pb2.CONTRACT_STAGE_PERFORMANCE,
            "违约": record_pb2.CONTRACT_STAGE_BREACH,
        },
    ),
}


# ---------------------------------------------------------------- errors


@dataclass(frozen=True, slots=True)
class CatalogueProblem:
    """One thing wrong in a catalogue file, where an operator finds it."""

    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}" if self.line else f"{self.file}: {self.message}"


class CatalogueError(CredexError):
    """A catalogue folder that does not validate; ``problems`` lists every problem, one ``file:line: message`` each."""

    def __init__(self, problems: Iterable[CatalogueProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(map(str, self.problems)))


class UnknownScenario(CredexError, KeyError):
    """A scenario code (or alias) that is not in the catalogue's scenario list."""

    def __str__(self) -> str:
        return str(self.args[0])


# ---------------------------------------------------------------- the model


@dataclass(frozen=True, slots=True)
class Scenario:
    """A check scenario (核查场景): the code a check sends, its names, and where the reference names it."""

    code: str
    name: str
    english: str
    aliases: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    # Laws that let a unit check natural persons in this scenario without their authorization.
    person_legal_bases: tuple[str, ...] = ()

    def allows_persons_by(self, legal_basis: str) -> bool:
        """Whether ``legal_basis`` (as a check names it) is one the catalogue allows for persons here.

        Compared after NFKC and without spaces, so 全角 digits or a stray space do not decide.
        """
        given = _folded_basis(legal_basis)
        return bool(given) and any(given == _folded_basis(allowed) for allowed in self.person_legal_bases)


@dataclass(frozen=True, slots=True)
class ListType:
    """A list a trigger can name: records of ``kind`` whose published list name contains one of ``match`` (or any)."""

    code: str
    name: str
    kind: int
    match: tuple[str, ...] = ()

    def contains(self, record: record_pb2.Record) -> bool:
        if record.kind != self.kind:
            return False
        if not self.match:
            return True
        published = (
            record.black_list.list_name if record.kind == record_pb2.KIND_BLACK_LIST else record.red_list.list_name
        )
        return any(fragment in published for fragment in self.match)


@dataclass(frozen=True, slots=True)
class Trigger:
    """Which records set a measure off: a kind, narrowed by list type, severity, grade, fulfilment, type or stage.

    Each narrowing field is empty for "any"; a record matches when its kind is
    the trigger's and every non-empty field holds its value.
    """

    kind: int
    list_types: tuple[ListType, ...] = ()
    severities: frozenset[int] = frozenset()
    grades: frozenset[int] = frozenset()
    fulfilments: frozenset[int] = frozenset()
    commitment_types: frozenset[int] = frozenset()
    contract_stages: frozenset[int] = frozenset()

    def matches(self, record: record_pb2.Record) -> bool:
        if record.kind != self.kind:
            return False
        if self.list_types and not any(list_type.contains(record) for list_type in self.list_types):
            return False
        checks = (
            (self.severities, record.penalty.severity),
            (self.grades, record.evaluation.grade),
            (self.fulfilments, record.commitment.fulfilment),
            (self.commitment_types, record.commitment.type),
            (self.contract_stages, record.contract.stage),
        )
        return all(not wanted or value in wanted for wanted, value in checks)

    def describe(self) -> str:
        """``penalty[严重]``, ``black_list[重大税收违法失信主体]``: the trigger in the file's own words."""
        words = [lt.code for lt in self.list_types]
        for name, (_, vocabulary) in _NARROWERS.items():
            chosen = getattr(self, name)
            words += [word for word, value in vocabulary.items() if value in chosen]
        return _KIND_NAMES[self.kind] + (f"[{','.join(words)}]" if words else "")


@dataclass(frozen=True, slots=True)
class Basis:
    """The legal basis (实施依据) of a measure: the document, the article where known, and a note."""

    document: str
    article: str = ""
    note: str = ""

    def __str__(self) -> str:
        return " ".join(part for part in (self.document, self.article) if part) + (
            f"（{self.note}）" if self.note else ""
        )


@dataclass(frozen=True, slots=True)
class Measure:
    """A published measure: what it is, whom it targets, its basis, what triggers it and where it applies.

    ``category`` is 惩戒 or 激励, ``measure_class`` the 基础清单's I/II/III for
    punishments (None where the source gives none). ``scenarios`` holds scenario
    codes, or ``"*"`` for every scenario. ``triggers`` are the measure's own
    triggers followed by those of its ``trigger_sets``. ``lookback_years`` is set
    for incentives only: no in-force negative record decided within it.
    ``source`` is ``file:line`` of its ``[[measure]]`` table.
    """

    id: str
    name: str
    category: str
    measure_class: str | None
    targets: tuple[str, ...]
    basis: Basis
    implementing_body: str
    triggers: tuple[Trigger, ...]
    trigger_sets: tuple[str, ...]
    scenarios: tuple[str, ...]
    edition: str
    region: str
    lookback_years: int | None
    confidence: str
    source: str

    @property
    def is_incentive(self) -> bool:
        return self.category == INCENTIVE

    def applies_in(self, scenario: str) -> bool:
        """Whether the measure applies in the scenario (its code, already resolved from any alias)."""
        return ALL_SCENARIOS in self.scenarios or scenario in self.scenarios

    def triggered_by(self, record: record_pb2.Record) -> bool:
        return any(trigger.matches(record) for trigger in self.triggers)

    def in_region(self, region: str | None) -> bool:
        """Whether a unit in ``region`` (None: anywhere) may apply it: national, Delta, or the unit's province."""
        return region is None or self.region in SPECIAL_REGIONS or self.region[:2] == region[:2]

    def targets_subject(self, subject_type: int) -> bool:
        """Whether a subject of this type (or a person linked to it, for an organisation) is among the targets."""
        fitting = _TARGETS_OF_SUBJECT.get(subject_type)
        return fitting is None or not fitting.isdisjoint(self.targets)


@dataclass(frozen=True, slots=True)
class NotifyCommit:
    """Whether 告知承诺 is available to a subject, and if not, the in-force records that exclude it."""

    available: bool
    excluded_by: tuple[str, ...] = ()


@dataclass(frozen=True)
class Catalogue:
    """A validated measures catalogue. Build it with :meth:`load` (or :meth:`shipped`); every answer is pure."""

    folder: str
    scenarios: Mapping[str, Scenario]
    list_types: Mapping[str, ListType]
    trigger_sets: Mapping[str, tuple[Trigger, ...]]
    measures: tuple[Measure, ...]
    files: tuple[str, ...] = ()
    _aliases: Mapping[str, str] = field(default_factory=dict, repr=False)
    # (scenario, province, subject type) -> record kind -> the punishments that may apply: filled on
    # first use, so a check of many records tests each record against a handful of triggers only.
    _punishments: dict[tuple[str, str | None, int], dict[int, tuple[Measure, ...]]] = field(
        default_factory=dict, repr=False, compare=False
    )
    _set_by_kind: dict[tuple[str, int], tuple[Trigger, ...]] = field(default_factory=dict, repr=False, compare=False)
    _incentives: dict[tuple[str, str | None, int], tuple[Measure, ...]] = field(
        default_factory=dict, repr=False, compare=False
    )

    @classmethod
    def load(cls, folder: Path | Traversable | None = None) -> Catalogue:
        """Read and validate a folder (default: the shipped one); :class:`CatalogueError` lists every problem."""
        return _Loader(folder if folder is not None else shipped_folder()).load()

    @staticmethod
    @cache
    def shipped() -> Catalogue:
        """The catalogue shipped with credex, loaded once."""
        return Catalogue.load()

    def scenario(self, code: str) -> Scenario:
        """The scenario of a code or alias (评先评优 -> 表彰奖励); :class:`UnknownScenario` if the list has neither."""
        canonical = self._aliases.get(code.strip())
        if canonical is None:
            known = ", ".join(self.scenarios)
            raise UnknownScenario(f"unknown scenario {code!r}: the catalogue's scenarios are {known}")
        return self.scenarios[canonical]

    def measure(self, measure_id: str) -> Measure:
        for measure in self.measures:
            if measure.id == measure_id:
                return measure
        raise KeyError(measure_id)

    def in_scenario(self, scenario: str | None) -> list[Measure]:
        """Every measure (punishments and incentives) that applies in a scenario, or all of them for None."""
        if scenario is None:
            return list(self.measures)
        code = self.scenario(scenario).code
        return [m for m in self.measures if m.applies_in(code)]

    def measures_for(self, record: record_pb2.Record, scenario: str, region: str | None = None) -> list[Measure]:
        """The punishments one in-force record triggers in a scenario, in catalogue order; each carries its basis.

        Only catalogue measures are ever returned. With ``region`` (the GB/T 2260
        code of the implementing unit), only national and Yangtze Delta measures
        and those of that province are kept. Incentives depend on all of a
        subject's records, so they come from :meth:`incentives_for` instead.
        """
        code = self.scenario(scenario).code
        key = (code, region[:2] if region else None, record.subject.type)
        by_kind = self._punishments.get(key)
        if by_kind is None:
            by_kind = self._punishments[key] = self._punishments_by_kind(code, region, record.subject.type)
        return [m for m in by_kind.get(record.kind, ()) if m.triggered_by(record)]

    def _punishments_by_kind(self, code: str, region: str | None, subject_type: int) -> dict[int, tuple[Measure, ...]]:
        """The punishments for a scenario, region and subject type, grouped by the record kinds that trigger them."""
        fitting = [
            m
            for m in self.measures
            if not m.is_incentive and m.in_region(region) and m.applies_in(code) and m.targets_subject(subject_type)
        ]
        kinds = {trigger.kind for m in fitting for trigger in m.triggers}
        return {kind: tuple(m for m in fitting if any(t.kind == kind for t in m.triggers)) for kind in kinds}

    def is_negative(self, record: record_pb2.Record) -> bool:
        """Whether a record counts against a subject in a look-back (the ``不良信息`` trigger set)."""
        return any(trigger.matches(record) for trigger in self._set_of_kind(NEGATIVE_SET, record.kind))

    def _set_of_kind(self, name: str, kind: int) -> tuple[Trigger, ...]:
        """The triggers of a trigger set that a record of ``kind`` can match (a record matches only its kind's)."""
        key = (name, kind)
        found = self._set_by_kind.get(key)
        if found is None:
            found = self._set_by_kind[key] = tuple(t for t in self.trigger_sets[name] if t.kind == kind)
        return found

    def incentives_for(
        self,
        in_force: Iterable[record_pb2.Record],
        scenario: str,
        today: dt.date,
        subject_type: int = record_pb2.SUBJECT_TYPE_UNSPECIFIED,
        region: str | None = None,
    ) -> list[Measure]:
        """The incentives a subject may be offered in a scenario, given all its in-force records.

        An incentive is offered only if no in-force negative record was decided
        within its look-back before ``today`` (a negative record without a
        decision date counts as recent), and, if it has triggers (a red list, say),
        some in-force record sets one off; one without triggers rewards a clean
        record alone (国发〔2016〕33号's "no adverse record in three years").
        """
        code = self.scenario(scenario).code
        records = list(in_force)
        dates = [decided_on(r) for r in records if self.is_negative(r)]
        offered = []
        key = (code, region[:2] if region else None, subject_type)
        candidates = self._incentives.get(key)
        if candidates is None:
            candidates = self._incentives[key] = tuple(
                m
                for m in self.measures
                if m.is_incentive and m.applies_in(code) and m.in_region(region) and m.targets_subject(subject_type)
            )
        for m in candidates:
            cutoff = add_months(today, -12 * (m.lookback_years or 0))
            if any(day is None or day >= cutoff for day in dates):
                continue
            if m.triggers and not any(m.triggered_by(r) for r in records):
                continue
            offered.append(m)
        return offered

    def notify_commit(self, in_force: Iterable[record_pb2.Record]) -> NotifyCommit:
        """Whether 告知承诺 is available: not while a record of the ``告知承诺排除`` set is in force.

        国办发〔2020〕42号: a serious adverse record or a false commitment excludes it until repaired.

        The shipped set holds serious-dishonesty lists, 失信被执行人, serious
        penalties and broken commitments; a repaired record is no longer in force,
        so it no longer excludes.
        """
        excluded = tuple(
            r.record_id
            for r in in_force
            if any(t.matches(r) for t in self._set_of_kind(NOTIFY_COMMIT_EXCLUSION_SET, r.kind))
        )
        return NotifyCommit(available=not excluded, excluded_by=excluded)


def _folded_basis(text: str) -> str:
    return "".join(unicodedata.normalize("NFKC", text).split())


def decided_on(record: record_pb2.Record) -> dt.date | None:
    """A record's decision date as a look-back reads it; None (counted as recent) if it is not a date."""
    try:
        return dt.date.fromisoformat(record.decision_date)
    except ValueError:
        return None


def shipped_folder() -> Traversable:
    """The shipped catalogue folder (package data of ``credex.domain``)."""
    return resources.files("credex.domain").joinpath("catalogue")


def check_folder(folder: Path | Traversable) -> tuple[Catalogue | None, list[CatalogueProblem]]:
    """Validate a folder: the catalogue and no problems, or None and every problem (for ``credex measures check``)."""
    try:
        return Catalogue.load(folder), []
    except CatalogueError as exc:
        return None, list(exc.problems)


# ---------------------------------------------------------------- loading

_HEADER = re.compile(r"^\s*\[\[?\s*([^\[\]]+?)\s*\]\]?\s*(#.*)?$")


class _Text:
    """Line numbers in a TOML text, which tomllib does not give for a value that parses but means nothing.

    A table is found by counting its headers (the n-th ``[[measure]]``), a key
    by its ``key =`` line inside the table's span, a value by its quoted text.
    """

    def __init__(self, text: str) -> None:
        self.headers = [
            (number, match.group(1))
            for number, line in enumerate(text.splitlines(), 1)
            if (match := _HEADER.match(line)) is not None
        ]
        self.lines = text.splitlines()

    def span(self, name: str, index: int, within: tuple[int, int] | None = None) -> tuple[int, int]:
        """Lines [start, end) of the index-th ``[[name]]`` table (inside ``within``), with its sub-tables."""
        low, high = within or (1, len(self.lines) + 1)
        found = [n for n, header in self.headers if header == name and low <= n < high]
        if index >= len(found):
            return low, high
        start = found[index]
        later = (n for n, header in self.headers if n > start and not header.startswith(name + "."))
        return start, min(next(later, high), high)

    def key(self, span: tuple[int, int], key: str, value: str | None = None) -> int:
        """The line of ``key =`` in a span (its own lines, before any sub-table), or of ``"value"`` after it."""
        start, end = span
        own_end = next((n for n, _ in self.headers if start < n < end), end)
        pattern = re.compile(rf'^\s*"?{re.escape(key)}"?\s*=')
        line = next((n for n in range(start, own_end) if pattern.match(self.lines[n - 1])), None)
        if line is None:
            return start
        if value is not None:
            quoted = f'"{value}"'
            return next((n for n in range(line, end) if quoted in self.lines[n - 1]), line)
        return line


@dataclass
class _File:
    """One catalogue file being read: its name, its parsed tables and its text for line numbers."""

    name: str
    data: dict[str, Any]
    text: _Text


class _Loader:
    """Reads a catalogue folder, collecting every problem before deciding."""

    def __init__(self, folder: Path | Traversable) -> None:
        self.folder = folder
        self.problems: list[CatalogueProblem] = []

    def problem(self, file: _File | str, line: int | None, message: str) -> None:
        self.problems.append(CatalogueProblem(file.name if isinstance(file, _File) else file, line, message))

    def read(self, entry: Traversable) -> _File | None:
        name = str(entry)
        try:
            text = entry.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            self.problem(name, None, f"cannot read: {exc}")
            return None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            line = getattr(exc, "lineno", None) or _decode_error_line(str(exc))
            self.problem(name, line, f"not valid TOML: {str(exc).split(' (at line')[0]}")
            return None
        return _File(name, data, _Text(text))

    def load(self) -> Catalogue:
        if not self.folder.is_dir():
            raise CatalogueError([CatalogueProblem(str(self.folder), None, "no such catalogue folder")])
        files = {name: self.folder.joinpath(name) for name in ("scenarios.toml", "lists.toml", "triggers.toml")}
        parsed: dict[str, _File | None] = {}
        for name, entry in files.items():
            if not entry.is_file():
                self.problem(
                    str(entry), None, "missing: a catalogue folder holds scenarios.toml, lists.toml, triggers.toml"
                )
                parsed[name] = None
            else:
                parsed[name] = self.read(entry)
        measures_dir = self.folder.joinpath("measures")
        measure_entries = (
            sorted((e for e in measures_dir.iterdir() if e.name.endswith(".toml")), key=lambda e: e.name)
            if measures_dir.is_dir()
            else []
        )
        if not measure_entries:
            self.problem(str(measures_dir), None, "no measure files (measures/*.toml)")
        measure_files = [f for f in map(self.read, measure_entries) if f is not None]

        scenarios, aliases = self.scenarios(parsed["scenarios.toml"])
        list_types = self.list_types(parsed["lists.toml"])
        trigger_sets = self.trigger_sets(parsed["triggers.toml"], list_types)
        measures: list[Measure] = []
        seen: dict[str, str] = {}
        for file in measure_files:
            measures += self.measures(file, aliases, list_types, trigger_sets, seen)
        if self.problems:
            raise CatalogueError(self.problems)
        return Catalogue(
            folder=str(self.folder),
            scenarios=scenarios,
            list_types=list_types,
            trigger_sets=trigger_sets,
            measures=tuple(measures),
            files=tuple(str(e) for e in (*files.values(), *measure_entries)),
            _aliases=aliases,
        )

    # -- field helpers: each reports a problem and returns a neutral value

    def tables(self, file: _File, name: str) -> list[dict[str, Any]]:
        value = file.data.get(name, [])
        if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
            self.problem(file, file.text.key((1, len(file.text.lines) + 1), name), f"{name} must be [[{name}]] tables")
            return []
        return value

    def text(self, file: _File, span: tuple[int, int], table: Mapping[str, Any], key: str, what: str) -> str:
        value = table.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
        if value is None:
            self.problem(file, span[0], f"{what} has no {key}")
        else:
            self.problem(file, file.text.key(span, key), f"{what}: {key} must be a non-empty string")
        return ""

    def words(self, file: _File, span: tuple[int, int], table: Mapping[str, Any], key: str, what: str) -> list[str]:
        value = table.get(key, [])
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return [v.strip() for v in value]
        self.problem(file, file.text.key(span, key), f"{what}: {key} must be a list of strings")
        return []

    def unknown_keys(
        self, file: _File, span: tuple[int, int], table: Mapping[str, Any], known: set[str], what: str
    ) -> None:
        for key in table:
            if key not in known:
                self.problem(file, file.text.key(span, key), f"{what}: unknown field {key!r}")

    # -- the files

    def scenarios(self, file: _File | None) -> tuple[dict[str, Scenario], dict[str, str]]:
        scenarios: dict[str, Scenario] = {}
        aliases: dict[str, str] = {}
        if file is None:
            return scenarios, aliases
        known = {"code", "name", "english", "aliases", "sources", "person_legal_bases"}
        for index, table in enumerate(self.tables(file, "scenario")):
            span = file.text.span("scenario", index)
            code = self.text(file, span, table, "code", f"scenario #{index + 1}")
            what = f"scenario {code or index + 1}"
            self.unknown_keys(file, span, table, known, what)
            scenario = Scenario(
                code=code,
                name=self.text(file, span, table, "name", what),
                english=self.text(file, span, table, "english", what),
                aliases=tuple(self.words(file, span, table, "aliases", what)),
                sources=tuple(self.words(file, span, table, "sources", what)),
                person_legal_bases=tuple(self.words(file, span, table, "person_legal_bases", what)),
            )
            if any(not basis for basis in scenario.person_legal_bases):
                self.problem(
                    file, file.text.key(span, "person_legal_bases"), f"{what}: person_legal_bases has an empty basis"
                )
            for name in (code, *scenario.aliases):
                if name and name in aliases:
                    self.problem(
                        file,
                        file.text.key(span, "aliases" if name != code else "code", name),
                        f"{what}: {name!r} already names scenario {aliases[name]}",
                    )
                elif name:
                    aliases[name] = code
            if code:
                scenarios.setdefault(code, scenario)
        if not scenarios:
            self.problem(file, None, "no [[scenario]] tables")
        return scenarios, aliases

    def list_types(self, file: _File | None) -> dict[str, ListType]:
        found: dict[str, ListType] = {}
        if file is None:
            return found
        for index, table in enumerate(self.tables(file, "list_type")):
            span = file.text.span("list_type", index)
            code = self.text(file, span, table, "code", f"list type #{index + 1}")
            what = f"list type {code or index + 1}"
            self.unknown_keys(file, span, table, {"code", "name", "kind", "match"}, what)
            kind_name = self.text(file, span, table, "kind", what)
            kind = TRIGGER_KINDS.get(kind_name, 0)
            if kind_name and kind not in _LISTED_KINDS:
                listed = ", ".join(_KIND_NAMES[k] for k in sorted(_LISTED_KINDS))
                self.problem(file, file.text.key(span, "kind"), f"{what}: kind {kind_name!r} is not a list ({listed})")
            if code in found:
                self.problem(file, span[0], f"duplicate list type {code!r}")
            elif code:
                found[code] = ListType(
                    code,
                    self.text(file, span, table, "name", what),
                    kind,
                    tuple(self.words(file, span, table, "match", what)),
                )
        return found

    def trigger_sets(self, file: _File | None, list_types: Mapping[str, ListType]) -> dict[str, tuple[Trigger, ...]]:
        found: dict[str, tuple[Trigger, ...]] = {}
        if file is None:
            return found
        for index, table in enumerate(self.tables(file, "trigger_set")):
            span = file.text.span("trigger_set", index)
            code = self.text(file, span, table, "code", f"trigger set #{index + 1}")
            what = f"trigger set {code or index + 1}"
            self.unknown_keys(file, span, table, {"code", "name", "trigger"}, what)
            self.text(file, span, table, "name", what)
            triggers = self.triggers(file, span, table, "trigger_set", what, list_types)
            if not triggers:
                self.problem(file, span[0], f"{what} has no [[trigger_set.trigger]]")
            if code in found:
                self.problem(file, span[0], f"duplicate trigger set {code!r}")
            elif code:
                found[code] = triggers
        for required in (NEGATIVE_SET, NOTIFY_COMMIT_EXCLUSION_SET):
            if required not in found:
                self.problem(file, None, f"trigger set {required!r} is required (the catalogue's rules read it)")
        return found

    def triggers(
        self,
        file: _File,
        span: tuple[int, int],
        table: Mapping[str, Any],
        parent: str,
        what: str,
        list_types: Mapping[str, ListType],
    ) -> tuple[Trigger, ...]:
        found = []
        for index, raw in enumerate(table.get("trigger", [])):
            tspan = file.text.span(f"{parent}.trigger", index, within=span)
            twhat = f"{what}, trigger #{index + 1}"
            if not isinstance(raw, dict):
                self.problem(file, tspan[0], f"{twhat}: must be a [[{parent}.trigger]] table")
                continue
            self.unknown_keys(file, tspan, raw, {"kind", "list_types", *_NARROWERS}, twhat)
            kind_name = self.text(file, tspan, raw, "kind", twhat)
            kind = TRIGGER_KINDS.get(kind_name)
            if kind is None:
                if kind_name:
                    self.problem(
                        file,
                        file.text.key(tspan, "kind"),
                        f"{twhat}: unknown record kind {kind_name!r} (one of {', '.join(TRIGGER_KINDS)})",
                    )
                continue
            chosen: list[ListType] = []
            for code in self.words(file, tspan, raw, "list_types", twhat):
                list_type = list_types.get(code)
                if list_type is None:
                    self.problem(
                        file,
                        file.text.key(tspan, "list_types", code),
                        f"{twhat}: unknown list type {code!r} (lists.toml defines {', '.join(list_types)})",
                    )
                elif list_type.kind != kind:
                    self.problem(
                        file,
                        file.text.key(tspan, "list_types", code),
                        f"{twhat}: list type {code!r} holds {_KIND_NAMES.get(list_type.kind)} records, not {kind_name}",
                    )
                else:
                    chosen.append(list_type)
            narrowed: dict[str, frozenset[int]] = {}
            for name, (narrows, vocabulary) in _NARROWERS.items():
                if name not in raw:
                    continue
                if narrows != kind:
                    self.problem(
                        file, file.text.key(tspan, name), f"{twhat}: {name} does not apply to {kind_name} records"
                    )
                    continue
                values = set()
                for word in self.words(file, tspan, raw, name, twhat):
                    if word in vocabulary:
                        values.add(vocabulary[word])
                    else:
                        self.problem(
                            file,
                            file.text.key(tspan, name, word),
                            f"{twhat}: unknown {name[:-1]} {word!r} (one of {', '.join(vocabulary)})",
                        )
                narrowed[name] = frozenset(values)
            found.append(Trigger(kind=kind, list_types=tuple(chosen), **narrowed))
        return tuple(found)

    def measures(
        self,
        file: _File,
        aliases: Mapping[str, str],
        list_types: Mapping[str, ListType],
        trigger_sets: Mapping[str, tuple[Trigger, ...]],
        seen: dict[str, str],
    ) -> list[Measure]:
        whole = (1, len(file.text.lines) + 1)
        self.unknown_keys(file, whole, file.data, {"catalogue", "measure"}, "file")
        header = file.data.get("catalogue")
        if not isinstance(header, dict):
            self.problem(file, None, "no [catalogue] table (title, edition, region)")
            header = {}
        hspan = file.text.span("catalogue", 0)
        self.unknown_keys(file, hspan, header, {"title", "edition", "region"}, "[catalogue]")
        self.text(file, hspan, header, "title", "[catalogue]")
        found = []
        for index, table in enumerate(self.tables(file, "measure")):
            span = file.text.span("measure", index)
            measure = self.measure(file, span, table, header, aliases, list_types, trigger_sets)
            if measure is None:
                continue
            if measure.id in seen:
                self.problem(
                    file, file.text.key(span, "id"), f"duplicate measure id {measure.id!r}, first at {seen[measure.id]}"
                )
                continue
            seen[measure.id] = measure.source
            found.append(measure)
        return found

    def measure(
        self,
        file: _File,
        span: tuple[int, int],
        table: Mapping[str, Any],
        header: Mapping[str, Any],
        aliases: Mapping[str, str],
        list_types: Mapping[str, ListType],
        trigger_sets: Mapping[str, tuple[Trigger, ...]],
    ) -> Measure | None:
        before = len(self.problems)
        measure_id = self.text(file, span, table, "id", "measure")
        what = f"measure {measure_id or '(no id)'}"
        known = {
            "id",
            "name",
            "category",
            "class",
            "targets",
            "basis",
            "implementing_body",
            "scenarios",
            "trigger_sets",
            "trigger",
            "edition",
            "region",
            "lookback_years",
            "confidence",
        }
        self.unknown_keys(file, span, table, known, what)
        name = self.text(file, span, table, "name", what)
        category = self.text(file, span, table, "category", what)
        if category and category not in (PUNISHMENT, INCENTIVE):
            self.problem(file, file.text.key(span, "category"), f"{what}: category must be {PUNISHMENT} or {INCENTIVE}")
        measure_class = table.get("class")
        if measure_class is not None and measure_class not in CLASSES:
            self.problem(file, file.text.key(span, "class"), f"{what}: class must be one of {', '.join(CLASSES)}")
        targets = self.words(file, span, table, "targets", what)
        if not targets and "targets" in table:
            self.problem(file, file.text.key(span, "targets"), f"{what}: targets is empty")
        elif "targets" not in table:
            self.problem(file, span[0], f"{what} has no targets")
        for target in targets:
            if target not in TARGETS:
                self.problem(
                    file,
                    file.text.key(span, "targets", target),
                    f"{what}: unknown target {target!r} (one of {', '.join(TARGETS)})",
                )
        basis = self.basis(file, span, table, what)
        body = self.text(file, span, table, "implementing_body", what)
        scenarios = []
        defined = ", ".join(dict.fromkeys(aliases.values()))
        for code in self.words(file, span, table, "scenarios", what):
            if code == ALL_SCENARIOS:
                scenarios.append(code)
            elif code in aliases:
                scenarios.append(aliases[code])
            else:
                self.problem(
                    file,
                    file.text.key(span, "scenarios", code),
                    f"{what}: unknown scenario {code!r} (scenarios.toml defines {defined})",
                )
        if "scenarios" not in table:
            self.problem(file, span[0], f"{what} has no scenarios")
        triggers = list(self.triggers(file, span, table, "measure", what, list_types))
        set_names = self.words(file, span, table, "trigger_sets", what)
        for set_name in set_names:
            if set_name in trigger_sets:
                triggers += trigger_sets[set_name]
            else:
                self.problem(
                    file,
                    file.text.key(span, "trigger_sets", set_name),
                    f"{what}: unknown trigger set {set_name!r} (triggers.toml defines {', '.join(trigger_sets)})",
                )
        if category == PUNISHMENT and not triggers and len(self.problems) == before:
            self.problem(file, span[0], f"{what}: a punishment needs a trigger ([[measure.trigger]] or trigger_sets)")
        lookback = table.get("lookback_years")
        if lookback is not None and category == PUNISHMENT:
            self.problem(file, file.text.key(span, "lookback_years"), f"{what}: lookback_years is for incentives only")
        elif lookback is not None and (not isinstance(lookback, int) or isinstance(lookback, bool) or lookback < 0):
            self.problem(
                file, file.text.key(span, "lookback_years"), f"{what}: lookback_years must be a whole number ≥ 0"
            )
        confidence = table.get("confidence", "M")
        if confidence not in CONFIDENCE:
            self.problem(
                file, file.text.key(span, "confidence"), f"{what}: confidence must be one of {', '.join(CONFIDENCE)}"
            )
        edition = table.get("edition", header.get("edition"))
        region = table.get("region", header.get("region"))
        if not isinstance(edition, str) or not edition:
            self.problem(file, span[0], f"{what} has no edition (set it in [catalogue] or on the measure)")
        if not isinstance(region, str) or not (region in SPECIAL_REGIONS or is_origin_code(region)):
            self.problem(
                file,
                file.text.key(span, "region") if "region" in table else span[0],
                f"{what}: region must be a GB/T 2260 code or one of {', '.join(SPECIAL_REGIONS)}",
            )
        if len(self.problems) != before:
            return None
        return Measure(
            id=measure_id,
            name=name,
            category=category,
            measure_class=measure_class,
            targets=tuple(targets),
            basis=basis,
            implementing_body=body,
            triggers=tuple(triggers),
            trigger_sets=tuple(set_names),
            scenarios=tuple(dict.fromkeys(scenarios)),
            edition=str(edition),
            region=str(region),
            lookback_years=(lookback if lookback is not None else DEFAULT_LOOKBACK_YEARS)
            if category == INCENTIVE
            else None,
            confidence=str(confidence),
            source=f"{file.name}:{span[0]}",
        )

    def basis(self, file: _File, span: tuple[int, int], table: Mapping[str, Any], what: str) -> Basis:
        raw = table.get("basis")
        if raw is None:
            self.problem(
                file,
                span[0],
                f"{what} has no basis: every measure names its legal basis (basis = {{ document = …, article = … }})",
            )
            return Basis("")
        if isinstance(raw, str):
            raw = {"document": raw}
        line = file.text.key(span, "basis")
        if not isinstance(raw, dict):
            self.problem(file, line, f"{what}: basis must be a table {{ document = …, article = …, note = … }}")
            return Basis("")
        for key in raw:
            if key not in ("document", "article", "note"):
                self.problem(file, line, f"{what}: basis has an unknown field {key!r}")
        parts = {key: raw.get(key, "") for key in ("document", "article", "note")}
        if not all(isinstance(v, str) for v in parts.values()):
            self.problem(file, line, f"{what}: basis fields must be strings")
            return Basis("")
        if not parts["document"].strip():
            self.problem(
                file, line, f"{what}: basis has no document (the law, regulation or policy document it rests on)"
            )
        return Basis(parts["document"].strip(), parts["article"].strip(), parts["note"].strip())


def _decode_error_line(message: str) -> int | None:
    match = re.search(r"at line (\d+)", message)
    return int(match.group(1)) if match else None


__all__ = [
    "ALL_SCENARIOS",
    "CLASSES",
    "INCENTIVE",
    "PUNISHMENT",
    "TARGETS",
    "TRIGGER_KINDS",
    "Basis",
    "Catalogue",
    "CatalogueError",
    "CatalogueProblem",
    "ListType",
    "Measure",
    "NotifyCommit",
    "Scenario",
    "Trigger",
    "UnknownScenario",
    "check_folder",
    "shipped_folder",
]
