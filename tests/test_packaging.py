"""The wheel carries every subpackage of ``credex`` and its data, and imports on its own.

``[tool.setuptools.package-dir]`` maps ``credex.node`` to ``node/`` and so on; a
package missing from that mapping, or data missing from ``package-data``, would
still import in an editable install (which reads the work tree) and fail only once
installed. So the wheel is built from a copy of the tree and unpacked, and every
module is imported from it in a fresh interpreter that reads neither the work
tree nor the editable install's import hook: only the unpacked wheel and the
third-party packages of this environment.
"""

from __future__ import annotations

import configparser
import json
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Folder in the tree -> subpackage, as pyproject.toml maps them.
SUBPACKAGES = {
    "node": "credex.node",
    "adapters": "credex.adapters",
    "crypto": "credex.crypto",
    "domain": "credex.domain",
    "proto/credex/v1": "credex.v1",
}
# Package data: (folder in the tree, glob) -> the same files must be in the wheel.
DATA = [
    ("node", "store/migrations/*.sql"),
    ("node", "reports/*.toml"),
    ("adapters", "samples/*.*"),
    ("adapters", "samples/platforms/*"),
    ("adapters", "profiles/*.toml"),
    ("proto/credex/v1", "*.proto"),
    ("proto/credex/v1", "*.pyi"),
    ("domain", "catalogue/*.toml"),
    ("domain", "catalogue/measures/*.toml"),
]
SOURCES = ["pyproject.toml", "README.md", "src", "node", "adapters", "crypto", "domain", "proto"]

# Run with -I -S: no site-packages .pth files (so no editable hook), no work tree.
IMPORT_ALL = """
import importlib, json, sys
from importlib import resources
site, names, entry = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
sys.path[:0] = [site, *json.loads(sys.argv[4])]
files = {name: importlib.import_module(name).__file__ for name in names}
module, _, attr = entry.partition(":")
assert callable(getattr(importlib.import_module(module), attr)), entry
from credex.node.store import database as store
migrations = [name for _, name, _ in store.migrations()]
profile = resources.files("credex.adapters").joinpath("profiles", "national.toml").read_text(encoding="utf-8")
print(json.dumps({"files": files, "migrations": migrations, "profile": bool(profile)}))
"""


@pytest.fixture(scope="module")
def unpacked_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("setuptools", reason="building the wheel offline needs setuptools in this environment")
    work = tmp_path_factory.mktemp("wheel")
    tree = work / "tree"
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, tree / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            tree.mkdir(exist_ok=True)
            shutil.copy2(source, tree / name)
    dist = work / "dist"
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet"]
    subprocess.run(
        [*pip, "-w", str(dist), str(tree)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    (wheel,) = dist.glob("credex-*.whl")
    site = work / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    return site


def test_wheel_holds_every_subpackage_and_its_data(unpacked_wheel: Path) -> None:
    package = unpacked_wheel / "credex"
    assert (package / "__init__.py").is_file()
    for folder, name in SUBPACKAGES.items():
        inside = package.joinpath(*name.split(".")[1:])
        shipped = {p.relative_to(inside) for p in inside.rglob("*.py")}
        in_tree = {p.relative_to(ROOT / folder) for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts}
        assert shipped == in_tree, name
    for folder, pattern in DATA:
        inside = package.joinpath(*SUBPACKAGES[folder].split(".")[1:])
        expected = {p.relative_to(ROOT / folder) for p in (ROOT / folder).glob(pattern)}
        assert expected, (folder, pattern)
        assert {p.relative_to(inside) for p in inside.glob(pattern)} == expected, (folder, pattern)


def test_every_module_imports_from_the_wheel_alone(unpacked_wheel: Path) -> None:
    package = unpacked_wheel / "credex"
    names = sorted(
        ".".join(path.relative_to(unpacked_wheel).with_suffix("").parts).removesuffix(".__init__")
        for path in package.rglob("*.py")
        if path.stem != "__main__"  # running it is the command line itself
    )
    assert set(SUBPACKAGES.values()) <= set(names)
    entry_points = configparser.ConfigParser()
    (entry_points_txt,) = unpacked_wheel.glob("credex-*.dist-info/entry_points.txt")
    entry_points.read(entry_points_txt)
    assert entry_points["console_scripts"]["credex"] == "credex.node.cli:main"
    # Third-party packages come from this environment's site-packages, read as bare
    # folders: their .pth files, the editable install's hook among them, stay unread.
    third_party = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    done = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            "-c",
            IMPORT_ALL,
            str(unpacked_wheel),
            json.dumps(names),
            entry_points["console_scripts"]["credex"],
            json.dumps(third_party),
        ],
        cwd=unpacked_wheel.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.splitlines()[-1])
    outside = {name: path for name, path in found["files"].items() if not Path(path).is_relative_to(unpacked_wheel)}
    assert not outside, outside
    assert found["migrations"] == sorted(p.name for p in (ROOT / "node" / "store" / "migrations").glob("*.sql"))
    assert found["profile"]
