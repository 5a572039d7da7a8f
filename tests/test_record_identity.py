"""Record identity is one set of rules, and the take-in side hands the ledger records, not store rows.

The subject id (a USCC, or a person's pseudonym) and the record id are decided in
:mod:`credex.domain.identity`; the profile that maps a row, the store that files
the record and the lookup service that answers for it all ask that module.
"""

from __future__ import annotations

import ast
import datetime as dt
import pickle
import re
import subprocess
import sys
from pathlib import Path

from credex.adapters.profile import MappingContext, Profile
from credex.crypto.pseudonym import Pseudonymizer
from credex.domain import identity, uscc
from credex.domain.records import Provenance, TakenRecord, canonical_bytes
from credex.node.store import RecordState
from credex.v1 import record_pb2

ROOT = Path(__file__).resolve().parent.parent
PSEUDONYMS = Pseudonymizer(b"k" * 32)
CONTEXT = MappingContext(origin="310000", pseudonymizer=PSEUDONYMS, today=dt.date(2026, 11, 1))
PENALTY_HEADER = ["CF_XDR_MC", "CF_XDR_LB", "CF_XDR_SHXYM", "CF_XDR_ZJHM", "CF_WSH", "CF_YJ", "CF_CFLB", "CF_NR"]
PENALTY_HEADER += ["CF_JDRQ", "CF_CFJG", "CF_CFJGDM", "CF_SJLY", "CF_SJLYDM"]
AUTHORITY = "上海市市场监督管理局"


def penalty(subject: str, category: str, code: str, id_number: str = "") -> record_pb2.Record:
    authority_code = uscc.make("11", "310000", "MA1AAAAA")
    row = [subject, category, code, id_number, "沪市监罚〔2026〕7号", "《食品安全法》", "警告", "警告"]
    row += ["2026-10-09", AUTHORITY, authority_code, AUTHORITY, authority_code]
    mapper = Profile.load("national").bind(PENALTY_HEADER, "test", CONTEXT)
    outcome = mapper.map_row(row, "line 2")
    assert isinstance(outcome, record_pb2.Record), outcome
    return outcome


def test_a_legal_entity_is_filed_by_its_uscc_and_its_record_id_follows_the_rule() -> None:
    code = uscc.make("91", "310105", "MA1FL8XQ")
    record = penalty("上海锦程信息科技有限公司", "法人及非法人组织", code)
    assert identity.subject_id(record) == code == RecordState.of(record).subject_id
    assert record.record_id == identity.record_id("310000", record_pb2.KIND_PENALTY, code, ["沪市监罚〔2026〕7号"])
    assert record.record_id.startswith("310000-CF-")


def test_a_natural_person_is_filed_by_pseudonym_only_under_the_same_rule() -> None:
    id_number = "11010519491231002X"
    record = penalty("王伟", "自然人", "", id_number)
    pseudonym = PSEUDONYMS.pseudonym(id_number)
    assert identity.subject_id(record) == pseudonym == RecordState.of(record).subject_id
    assert not record.subject.uscc
    assert record.record_id == identity.record_id("310000", record_pb2.KIND_PENALTY, pseudonym, ["沪市监罚〔2026〕7号"])


def test_a_kind_without_a_tag_still_gets_a_stable_id() -> None:
    assert identity.kind_tag(999) == "K999"
    assert identity.record_id("310000", 999, "s", ["a"]) == identity.record_id("310000", 999, "s", ["a"])
    assert identity.record_id("310000", 999, "s", ["a"]) != identity.record_id("310000", 999, "s", ["b"])


def test_a_taken_record_crosses_processes_as_its_canonical_bytes_and_keeps_them() -> None:
    record = penalty("上海锦程信息科技有限公司", "法人及非法人组织", uscc.make("91", "310105", "MA1FL8XQ"))
    taken = TakenRecord(record, Provenance("a.csv", "line 2", "national"))
    back = pickle.loads(pickle.dumps(taken))
    assert back.record == record and back.provenance == taken.provenance
    assert back.encoded == canonical_bytes(record)
    assert RecordState.of(back.record, back.encoded) == RecordState.of(record)


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_the_identity_rules_are_written_once() -> None:
    """Nothing outside the identity module restates ``uscc or person_pseudonym`` or the kind tags."""
    offenders = []
    for folder in ("node", "adapters", "domain"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.name == "identity.py":
                continue
            text = path.read_text(encoding="utf-8")
            if re.search(r"uscc or [\w.]*person_pseudonym", text) or '"HMD"' in text:
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_mapping_hands_over_records_and_never_builds_ledger_or_store_rows() -> None:
    profile_modules = set().union(*(_imported_modules(p) for p in (ROOT / "adapters" / "profile").glob("*.py")))
    assert not {m for m in profile_modules if m.startswith("credex.node")}
    mapping = _imported_modules(ROOT / "node" / "feeds" / "mapping.py")
    assert not {m for m in mapping if m.startswith(("credex.node.ledger", "credex.node.store"))}


def test_the_node_and_its_commands_load_without_the_sample_generators() -> None:
    """Sample generators are for ``credex synth``, the demo and the tests: no production path imports them."""
    probe = (
        "import sys, importlib\n"
        "for name in ('credex.node.runtime', 'credex.node.cli', 'credex.node.feeds'):\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.startswith('credex.adapters.samples')))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]"
