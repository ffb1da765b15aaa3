"""What a release carries: the dependencies pyproject.toml declares, and the sdist's contents."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

#: Import names whose distribution is called otherwise.
DISTRIBUTION = {"PIL": "pillow", "yaml": "pyyaml", "tomli": "tomli"}


def declared() -> set[str]:
    """The distributions pyproject.toml's ``dependencies`` name, lower case."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].lower() for requirement in project["dependencies"]}


def imported_at_run_time() -> dict[str, str]:
    """Top-level third-party modules the package imports, each with a file that imports it;
    imports guarded by ``try`` (optional extras, such as onnx) are left out."""
    local = {path.stem for path in (ROOT / "specnet").rglob("*.py")} | {"specnet"}
    found: dict[str, str] = {}
    for path in sorted((ROOT / "specnet").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        guarded = {id(node) for t in ast.walk(tree) if isinstance(t, ast.Try) for body in t.body for node in ast.walk(body)}
        for node in ast.walk(tree):
            if id(node) in guarded:
                continue
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in local:
                    found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def test_every_module_the_package_imports_is_a_declared_dependency():
    imports = imported_at_run_time()
    assert {"torch", "numpy", "soundfile", "audioread", "click", "PIL"} <= set(imports)  # the scan sees them
    missing = {name: where for name, where in imports.items()
               if DISTRIBUTION.get(name, name).lower() not in declared() and name not in ("onnx", "onnxruntime")}
    assert not missing, f"imported but not in pyproject.toml's dependencies: {missing}"


def test_the_sdist_carries_the_test_suite_and_what_it_reads(tmp_path):
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True)
    if tracked.returncode != 0:
        pytest.skip("not a git checkout: which files a release is made of is git's list")
    files = [name for name in tracked.stdout.decode().split("\0") if name]
    # Built from a copy of the tracked files alone: setuptools would also take whatever an
    # egg-info folder left by an earlier build lists.
    source = tmp_path / "source"
    for name in files:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    subprocess.run([sys.executable, "-c", "import sys; from setuptools import build_meta; build_meta.build_sdist(sys.argv[1])",
                    str(tmp_path / "dist")], cwd=source, check=True, capture_output=True)
    (sdist,) = (tmp_path / "dist").glob("specnet-*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    needed = {name for name in files if name.startswith(("tests/", "examples/", "recipes/", ".ci/"))}  # what the tests read
    assert {"tests/conftest.py", "tests/helpers.py", "tests/fuzz/fuzz_audio.py", "examples/dog.wav", "recipes/fsdd/config.toml",
            ".ci/run"} <= needed
    assert not needed - names, f"left out of the sdist: {sorted(needed - names)[:5]}"
    assert {"specnet/bundled/esc10.safetensors", "specnet/bundled/ATTRIBUTION.txt", "LICENSE", "README.md"} <= names
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc") or name.startswith(".venv")]
