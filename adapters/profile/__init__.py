"""Profiles: how a platform's row becomes a canonical record, as a data file.

A profile (``profiles/<name>.toml``) lists, per record kind, which columns feed
which record field, with a value type and code lists. An operator copies and
edits the file for a platform whose export differs; no Python changes. What is
rule rather than mapping — who the subject is, the record's identity, the
publicity window — is applied in code, the same way for every profile.

The rooms: :mod:`.schema` (what a profile file says; context, problems,
rejections), :mod:`.loader` (shipped and local files, ``include``), :mod:`.binder`
(a table's header to a record kind), :mod:`.mapper` (a row to a record),
:mod:`.rules` (subject, identity, publicity), :mod:`.converters` (cell values),
:mod:`.reflection` (profile names resolved against the proto).
"""

from credex.adapters.profile.binder import Profile
from credex.adapters.profile.loader import shipped_profiles
from credex.adapters.profile.mapper import TableMapper
from credex.adapters.profile.schema import (
    FieldSpec,
    KindSpec,
    MappingContext,
    Problem,
    ProfileError,
    ProfileSpec,
    Rejection,
    Withdrawn,
    header_key,
)

__all__ = [
    "FieldSpec",
    "KindSpec",
    "MappingContext",
    "Problem",
    "Profile",
    "ProfileError",
    "ProfileSpec",
    "Rejection",
    "TableMapper",
    "Withdrawn",
    "header_key",
    "shipped_profiles",
]
