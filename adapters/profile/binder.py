"""A loaded profile, checked against the canonical record, choosing the record kind a table holds."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from credex.adapters.profile.loader import load_spec
from credex.adapters.profile.mapper import TableMapper
from credex.adapters.profile.reflection import enum_number, field_path
from credex.adapters.profile.schema import (
    SPECIAL_PREFIXES,
    WITHDRAWAL,
    MappingContext,
    ProfileError,
    ProfileSpec,
    header_key,
)
from credex.v1 import record_pb2


class Profile:
    """A profile whose kinds, code lists and field paths all exist in the proto; binds tables to kinds."""

    def __init__(self, spec: ProfileSpec) -> None:
        self.spec = spec
        self.name = spec.name
        for kind in spec.kinds:
            enum_number(record_pb2.Kind.DESCRIPTOR, kind.kind)
            enum_number(record_pb2.Category.DESCRIPTOR, kind.category)
            enum_number(record_pb2.SharingLevel.DESCRIPTOR, kind.sharing_level)
            for path, spec_field in kind.fields.items():
                if spec_field.codes and spec_field.codes not in spec.codes:
                    raise ProfileError(f"profile {spec.name}: {path} uses unknown code list {spec_field.codes!r}")
                if not path.startswith(SPECIAL_PREFIXES) and path != WITHDRAWAL:
                    field_path(record_pb2.Record.DESCRIPTOR, path)

    @classmethod
    def load(cls, name_or_path: str | Path) -> Profile:
        """A shipped profile by name (``national``) or a profile file by path."""
        return cls(load_spec(name_or_path))

    def bind(
        self,
        header: Sequence[str],
        source: str,
        context: MappingContext,
        *,
        sheet: str = "",
        kind_value: str | None = None,
    ) -> TableMapper:
        """Choose the record kind (by kind field, sheet name or header) and map columns to fields."""
        kinds = self.spec.kinds
        if kind_value is not None:
            wanted = header_key(kind_value)
            chosen = next((k for k in kinds if wanted in {header_key(w) for w in k.when}), None)
            if chosen is None:
                raise ProfileError(f"{source}: kind {kind_value!r} is not one profile {self.name} takes in")
        else:
            present = {header_key(h) for h in header}
            chosen = next((k for k in kinds if sheet and sheet in k.sheets), None) or next(
                (k for k in kinds if any(header_key(d) in present for d in k.detect)), None
            )
        if chosen is None:
            detectors = "; ".join(f"{k.kind}: {' or '.join(k.detect or k.sheets or k.when)}" for k in kinds)
            raise ProfileError(
                f"{source}: the header matches no record kind of profile {self.name} (looked for {detectors})"
            )
        return TableMapper(self.spec, chosen, header, source, context)
