"""Lay the package ``credex`` out as one folder of links for mypy, outside git.

``[tool.setuptools.package-dir]`` in pyproject.toml maps each subpackage to a
top-level folder (``credex.node`` is ``node/``). An editable install resolves
that mapping with an import hook, which mypy does not run; so this script
repeats the mapping as links under ``build/typecheck/`` (mypy's ``mypy_path``),
and mypy reads the real files under their ``credex.*`` names. ``make`` runs it
whenever pyproject.toml changes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "build" / "typecheck"


def package_dirs() -> dict[str, Path]:
    """Each package named in pyproject.toml, with the folder that holds it."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return {name: ROOT / folder for name, folder in setuptools["package-dir"].items()}


def _link(target: Path, link: Path) -> None:
    link.symlink_to(os.path.relpath(target, link.parent), target_is_directory=target.is_dir())


def build(out: Path) -> None:
    """Replace ``out`` with links: a package that holds mapped subpackages is a
    folder of links to its own files; any other package is one link to its folder."""
    shutil.rmtree(out, ignore_errors=True)
    packages = package_dirs()
    for name in sorted(packages, key=lambda n: n.count(".")):
        place = out.joinpath(*name.split("."))
        if any(other.startswith(f"{name}.") for other in packages):
            place.mkdir(parents=True)
            for entry in sorted(packages[name].iterdir()):
                if entry.name != "__pycache__":
                    _link(entry, place / entry.name)
        else:
            _link(packages[name], place)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output root (default: build/typecheck)")
    build(parser.parse_args().out)


if __name__ == "__main__":
    main()
