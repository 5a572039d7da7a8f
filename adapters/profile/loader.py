"""Finding and reading profile files: shipped ones by name, others by path, ``include`` resolved.

A platform whose export differs a little from a shipped profile says
``include = "national"`` and lists only what differs, so the operator's file
stays short and picks up fixes to the profile it builds on.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from credex.adapters.profile.schema import ProfileError, ProfileSpec

_SHIPPED = ("credex.adapters", "profiles")


def load_spec(name_or_path: str | Path) -> ProfileSpec:
    """A shipped profile by name (``national``) or a profile file by path, checked against the schema."""
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.exists():
        text, source = path.read_text(encoding="utf-8"), str(path)
    else:
        entry = resources.files(_SHIPPED[0]).joinpath(_SHIPPED[1], f"{name_or_path}.toml")
        if not entry.is_file():
            raise ProfileError(f"no profile {name_or_path!r}; shipped profiles: {', '.join(shipped_profiles())}")
        text, source = entry.read_text(encoding="utf-8"), f"profile {name_or_path}"
    try:
        data = tomllib.loads(text)
        base = data.pop("include", None)
        if base is not None:
            data = _merged(load_spec(base), data)
        return ProfileSpec.model_validate(data)
    except (tomllib.TOMLDecodeError, ValidationError) as exc:
        raise ProfileError(f"{source} is not a valid profile:\n{exc}") from exc


def _merged(base: ProfileSpec, data: dict[str, Any]) -> dict[str, Any]:
    """A profile built on another (``include = "national"``): its code lists, and its kinds.

    A kind listed without fields adjusts how the included kind is recognised (sheets,
    kind field values, columns) and keeps its fields; a kind with fields replaces or adds.
    """
    merged = base.model_dump()
    merged.update({k: v for k, v in data.items() if k not in ("codes", "kinds")})
    merged["codes"] = {**merged["codes"], **data.get("codes", {})}
    kinds = {k["kind"]: k for k in merged["kinds"]}
    for kind in data.get("kinds", []):
        if kind.get("fields"):
            kinds[kind["kind"]] = kind
        elif kind["kind"] in kinds:
            kinds[kind["kind"]] = {**kinds[kind["kind"]], **kind}
        else:
            raise ProfileError(f"kind {kind['kind']} has no fields and is not in the included profile")
    merged["kinds"] = list(kinds.values())
    return merged


def shipped_profiles() -> list[str]:
    folder = resources.files(_SHIPPED[0]).joinpath(_SHIPPED[1])
    return sorted(p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml"))
