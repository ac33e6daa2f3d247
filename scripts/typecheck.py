"""Type-check the gais_pipe package with mypy (configured under [tool.mypy] in pyproject.toml).

mypy knows nothing of setuptools' package-dir, which installs the folders pipeline/, extract/, ... as
gais_pipe, gais_pipe.extract, ..., and the editable install reaches them through an import hook that
static tools cannot follow. So this script lays the installed layout out as symlinks, build/mypy/gais_pipe/...
onto the folders (brought up to date from package-dir on every run, so a new module or package is seen at
once), which mypy reaches through `mypy_path`, and prints mypy's report with the real paths
(extract/reader.py, not build/mypy/gais_pipe/extract/reader.py). Arguments are mypy's options; the exit
status is mypy's. Once the tree exists, a plain `.venv/bin/mypy` (an editor's, too) checks the same.

    .venv/bin/python scripts/typecheck.py
    .venv/bin/python scripts/typecheck.py --no-incremental     # cold: ignore .mypy_cache
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from importlib.util import find_spec
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TREE = ROOT / "build" / "mypy"  # must match mypy_path in pyproject.toml
SKIP = {"__pycache__"}


def package_dirs() -> dict[str, Path]:
    """setuptools' package-dir: package name -> its folder."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return {name: ROOT / folder for name, folder in pyproject["tool"]["setuptools"]["package-dir"].items()}


def wanted_links() -> dict[Path, Path]:
    """build/mypy/<package path> for every mapped package: a link to its folder, or (where other mapped packages
    sit below it) a real folder holding a link to each of its entries beside the links of those packages."""
    mapped = package_dirs()
    links = {}
    for name, folder in mapped.items():
        place = TREE.joinpath(*name.split("."))
        if not any(other.startswith(name + ".") for other in mapped):
            links[place] = folder
            continue
        for entry in folder.iterdir():
            if entry.name not in SKIP and f"{name}.{entry.name}" not in mapped:
                links[place / entry.name] = entry
    return links


def lay_out_tree() -> None:
    """Bring build/mypy to `wanted_links`, changing only what differs: another check running at the same time
    in this working tree finds every link that stays in place."""
    links = wanted_links()
    folders = {parent for place in links for parent in place.parents if TREE in (parent, *parent.parents)}
    for here, folder_names, file_names in os.walk(TREE, topdown=False):  # never enters a linked folder
        for path in (Path(here, name) for name in [*folder_names, *file_names]):
            if path.is_symlink():  # unlinking a link leaves what it points to alone
                if links.get(path) != Path(os.readlink(path)):
                    path.unlink(missing_ok=True)
            elif path.is_dir():
                if path not in folders:
                    shutil.rmtree(path, ignore_errors=True)  # a folder of this tree's own links
            else:
                path.unlink(missing_ok=True)  # a stray file in one of this tree's own folders
    for place, target in sorted(links.items()):
        place.parent.mkdir(parents=True, exist_ok=True)
        if not place.is_symlink():
            try:
                place.symlink_to(target, target_is_directory=target.is_dir())
            except FileExistsError:  # made meanwhile by a check running beside this one
                pass


PATH_AT_START = re.compile(r"^(\S+?\.pyi?)(?=:)")


def real_path(match: re.Match[str]) -> str:
    """A path into the tree as the file's own, relative to the project (any other path as it is)."""
    path = ROOT / match.group(1)  # an absolute path stays itself
    if TREE not in path.parents:
        return match.group(1)
    return os.path.relpath(path.resolve(), ROOT)


def main() -> int:
    if find_spec("mypy") is None:
        print(f"typecheck: mypy is not installed in {sys.prefix}; install the dev extra (pip install -e '.[dev]')")
        return 2
    lay_out_tree()
    mypy = subprocess.Popen(
        [sys.executable, "-m", "mypy", *sys.argv[1:]],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert mypy.stdout is not None
    for line in mypy.stdout:
        sys.stdout.write(PATH_AT_START.sub(real_path, line))
        sys.stdout.flush()
    return mypy.wait()


if __name__ == "__main__":
    sys.exit(main())
