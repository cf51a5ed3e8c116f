"""The `dtmx` command after `pip install dtmx` alone: help and version work, server
commands name the extra to install. The server's modules are made unimportable the way a
missing package is (None in sys.modules), in a child process."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

import dtmx

SERVER_DEPS = ("yaml", "httptools", "prometheus_client", "grpc", "asyncmy", "asyncpg")


def run_cli(*args: str, block: tuple[str, ...] = SERVER_DEPS) -> subprocess.CompletedProcess[str]:
    code = (
        "import sys\n"
        f"for name in {block!r}: sys.modules[name] = None\n"
        "from dtmx.cli import main\n"
        f"raise SystemExit(main({list(args)!r}))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize("args", [("--help",), ("serve", "--help"), ("migrate", "--help")])
def test_help_without_server_deps(args: tuple[str, ...]) -> None:
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    assert "usage: dtmx" in r.stdout


def test_help_loads_no_http_client() -> None:
    """`dtmx --help` stays fast: the barrier prune command's module (and aiohttp, which the
    SDK package brings) load only when that command runs."""
    r = run_cli("--help", block=(*SERVER_DEPS, "aiohttp"))
    assert r.returncode == 0, r.stderr
    assert "barrier" in r.stdout


@pytest.mark.parametrize("verb", [("tx", "list"), ("topics", "list"), ("servers",)])
def test_operator_verbs_run_with_the_sdk_alone(verb: tuple[str, ...]) -> None:
    """The operator CLI's client verbs load nothing of the server (nor aiohttp): against a
    closed port they get as far as the connection and say so (exit 5, unreachable)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = run_cli(*verb, "--server", f"http://127.0.0.1:{port}", block=(*SERVER_DEPS, "aiohttp"))
    assert r.returncode == 5, r.stderr
    assert "cannot reach" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("args", [("--version",), ("version",), ("-V",)])
def test_version_without_server_deps(args: tuple[str, ...]) -> None:
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"dtmx {dtmx.__version__}"


@pytest.mark.parametrize("command", ["serve", "migrate"])
def test_server_commands_name_the_extra(command: str) -> None:
    r = run_cli(command)
    assert r.returncode == 2
    assert r.stderr.strip() == "dtmx: yaml is not installed: pip install 'dtmx[server]'"
    assert "Traceback" not in r.stderr


def test_missing_store_driver_names_its_extra(tmp_path: object) -> None:
    import pathlib

    conf = pathlib.Path(str(tmp_path)) / "conf.yml"
    conf.write_text(
        "Store:\n  Driver: mysql\n  Host: 127.0.0.1\n  Port: 1\n  User: u\n  Password: p\n"
    )
    r = run_cli("migrate", "-c", str(conf), block=("asyncmy",))
    assert r.returncode == 2
    assert r.stderr.strip().endswith("asyncmy is not installed: pip install 'dtmx[mysql]'")
