"""The package as users get it: sdist and wheel built from the tree, installed into fresh
venvs (no clone on the path). One venv has the SDK only (`pip install dtmx`), one the
server (`pip install 'dtmx[server]'`): the server from the wheel runs on SQLite, and the
SDK-only venv runs sagas against it.

pip takes the packages from its cache or the configured index; each step is bounded.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import dtmx
from tests.support.server import ServerProcess
from tests.support.util import free_port

ROOT = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent
VERSION = dtmx.__version__


def run(*cmd: str | Path, timeout: float = 300, **kw: object) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, check=False,
        **kw,  # type: ignore[arg-type]
    )
    assert r.returncode == 0, f"{cmd}: {r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return r


def source_copy(dest: Path) -> Path:
    """The tracked and new (not ignored) files of the tree: what a clean clone has."""
    listed = run("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=ROOT)
    for name in filter(None, listed.stdout.split("\0")):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def build(src: Path, out: Path, *what: str) -> None:
    run(sys.executable, "-m", "build", "--no-isolation", *what, "--outdir", out, src)


def venv(path: Path, *requirements: str) -> Path:
    """A fresh venv with `requirements` installed; its python."""
    run(sys.executable, "-m", "venv", "--without-pip", path)
    py = path / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", py, "install", "-q",
        "--disable-pip-version-check", *requirements)
    return py


@dataclass
class Dists:
    wheel: Path
    sdist: Path


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Dists:
    tmp = tmp_path_factory.mktemp("dists")
    out = tmp / "dist"
    build(source_copy(tmp / "src"), out, "--sdist", "--wheel")
    return Dists(out / f"dtmx-{VERSION}-py3-none-any.whl", out / f"dtmx-{VERSION}.tar.gz")


def test_metadata(dists: Dists) -> None:
    with zipfile.ZipFile(dists.wheel) as z:
        names = set(z.namelist())
        meta = z.read(f"dtmx-{VERSION}.dist-info/METADATA").decode()
    assert f"dtmx-{VERSION}.dist-info/licenses/LICENSE" in names
    assert "License-Expression: MIT" in meta and "Classifier: Typing :: Typed" in meta
    assert f"Version: {VERSION}" in meta and "Project-URL: " in meta
    # the SDK alone needs aiohttp and orjson; everything else is behind an extra
    plain = [line for line in meta.splitlines()
             if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert sorted(p.split()[1].split(">")[0] for p in plain) == ["aiohttp", "orjson"]
    for extra in ("server", "mysql", "postgres", "redis", "etcd", "grpc", "all",
                  "barrier-mysql", "barrier-postgres", "barrier-sqlite", "barrier-redis"):
        assert f"Provides-Extra: {extra}" in meta
    # shipped data, and no tests
    assert {"dtmx/py.typed", "dtmx/proto/dtmgimp.proto",
            "dtmx/stores/sql/sqlite_0001_init.sql"} <= names
    assert not any(n.startswith("tests/") for n in names)


def test_sdist_builds_the_same_wheel(dists: Dists, tmp_path: Path) -> None:
    with tarfile.open(dists.sdist) as t:
        t.extractall(tmp_path, filter="data")
    assert (tmp_path / f"dtmx-{VERSION}" / "LICENSE").is_file()
    build(tmp_path / f"dtmx-{VERSION}", tmp_path / "out", "--wheel")
    with zipfile.ZipFile(dists.wheel) as a, \
            zipfile.ZipFile(tmp_path / "out" / dists.wheel.name) as b:
        assert sorted(a.namelist()) == sorted(b.namelist())


@pytest.fixture(scope="module")
def sdk_python(dists: Dists, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield venv(tmp_path_factory.mktemp("venv") / "sdk", str(dists.wheel))


@pytest.fixture(scope="module")
def server_python(dists: Dists, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield venv(tmp_path_factory.mktemp("venv") / "server", f"dtmx[server] @ {dists.wheel.as_uri()}")


def test_sdk_only_cli(sdk_python: Path) -> None:
    dtmx_cmd = sdk_python.parent / "dtmx"
    assert run(dtmx_cmd, "--version").stdout.strip() == f"dtmx {VERSION}"
    assert "usage: dtmx" in run(dtmx_cmd, "--help").stdout
    r = subprocess.run([dtmx_cmd, "serve"], capture_output=True, text=True, timeout=60,
                       check=False)
    assert r.returncode == 2
    assert r.stderr.strip() == "dtmx: yaml is not installed: pip install 'dtmx[server]'"


def test_wheel_server_and_sdk_only_client(
    sdk_python: Path, server_python: Path, tmp_path: Path
) -> None:
    server = ServerProcess(python=str(server_python), workdir=str(tmp_path)).start()
    try:
        out = run(sdk_python, HERE / "sdk_saga.py", server.url, str(free_port()),
                  timeout=120, cwd=tmp_path)
        assert out.stdout.strip() == "sdk saga ok"
    finally:
        server.stop()
