"""Every Python snippet of README.md and docs/*.md runs, against a real `dtmx serve`.

The snippets of one page run in order in one namespace, as a reader would type them into
an async REPL (top-level `await` allowed), starting with: `DTMX_SERVER` (the server's HTTP
URL), `DTMX_GRPC` (its gRPC address), `busi` / `BUSI` (a branch service answering SUCCESS
on any path), `client` (a `DtmClient`) and `gid` (a fresh gid before each snippet).

A comment line right before the block marks it:
- `<!-- snippet: needs server -->` / `needs grpc`: says so to the reader; it runs as above
  (every snippet here has the server, over HTTP and gRPC).
- `<!-- snippet: in examples/NAME.py -->`: an excerpt of an example, which runs end to end
  in tests/integration/examples; every code line of the snippet must be in that file.
"""

from __future__ import annotations

import ast
import inspect
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dtmx.client import DtmClient
from tests.integration.sdk.branch_service import BranchService
from tests.support.server import ServerProcess

ROOT = Path(__file__).resolve().parents[3]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(r"(?:^(<!-- snippet: (?P<mark>[^>]*) -->)\n)?^```python\n(?P<code>.*?)^```",
                    re.M | re.S)


@dataclass
class Snippet:
    page: Path
    line: int
    mark: str
    code: str

    @property
    def name(self) -> str:
        return f"{self.page.name}:{self.line}"


def snippets(page: Path) -> list[Snippet]:
    text = page.read_text()
    return [
        Snippet(page, text[: m.start("code")].count("\n"), (m.group("mark") or "").strip(),
                m.group("code"))
        for m in _BLOCK.finditer(text)
    ]


def test_every_page_has_its_snippets_found() -> None:
    for page in PAGES:
        fences = page.read_text().count("```python")
        assert len(snippets(page)) == fences, page


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    s = ServerProcess().start()
    yield s
    s.stop()


@pytest.fixture
def busi(server: ServerProcess) -> Iterator[str]:
    svc = BranchService(server.url).start()
    yield svc.url("").rstrip("/")
    svc.stop()


def check_excerpt(s: Snippet) -> None:
    source = ROOT / s.mark.removeprefix("in ").strip()
    assert source.is_file(), f"{s.name}: {source} does not exist"
    lines = {line.strip() for line in source.read_text().splitlines()}
    missing = [
        line for line in s.code.splitlines()
        if line.strip() and not line.strip().startswith("#")
        and line.split("  #")[0].strip() not in {x.split("  #")[0].strip() for x in lines}
    ]
    assert not missing, f"{s.name}: not in {source.name}: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
async def test_snippets_run(page: Path, server: ServerProcess, busi: str) -> None:
    page_snippets = snippets(page)
    if not page_snippets:
        pytest.skip(f"{page.name} has no Python snippet")
    async with DtmClient(server.url) as client:
        ns: dict[str, object] = {
            "DTMX_SERVER": server.url, "DTMX_GRPC": server.grpc_target,
            "busi": busi, "BUSI": busi, "client": client, "__name__": "snippet",
        }
        for s in page_snippets:
            if s.mark.startswith("in "):
                check_excerpt(s)
                continue
            ns["gid"] = await client.new_gid()
            code = compile(s.code, s.name, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
            try:
                result = eval(code, ns)
                if inspect.iscoroutine(result):
                    await result
            except Exception as e:
                raise AssertionError(f"snippet {s.name} failed: {e!r}\n{s.code}") from e
