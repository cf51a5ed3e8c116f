"""The barrier's construction, DDL and decision rules, without a database."""

from __future__ import annotations

import subprocess
import sys
from urllib.parse import parse_qs

import pytest

from dtmx.client.barrier import DEFAULT_TABLE, BranchBarrier, Dialect, ddl
from dtmx.client.barrier._algo import Decision, plan_call

QUERY = {"gid": "g1", "trans_type": "saga", "branch_id": "01", "op": "action"}


def test_keyword_construction_and_defaults() -> None:
    b = BranchBarrier(trans_type="saga", gid="g1", branch_id="01", op="action")
    assert (b.table, b.barrier_id) == (DEFAULT_TABLE, 0)
    assert BranchBarrier.from_query(QUERY) == b


def test_from_query_takes_first_of_multi_values() -> None:
    qs = parse_qs("gid=g1&trans_type=saga&branch_id=01&op=action&op=ignored")
    assert BranchBarrier.from_query(qs).op == "action"


@pytest.mark.parametrize("missing", ["gid", "trans_type", "branch_id", "op"])
def test_from_query_names_missing_params(missing: str) -> None:
    query = {k: v for k, v in QUERY.items() if k != missing}
    with pytest.raises(ValueError, match=missing):
        BranchBarrier.from_query(query)
    with pytest.raises(ValueError, match=missing):
        BranchBarrier.from_query({**query, missing: ""})


@pytest.mark.parametrize("table", ["a.b.c", "x; drop table y", "", "1abc", "a.-"])
def test_table_name_must_be_an_identifier(table: str) -> None:
    with pytest.raises(ValueError):
        BranchBarrier(trans_type="saga", gid="g", branch_id="01", op="action", table=table)


def test_ddl_matches_dtm_layout() -> None:
    mysql = "\n".join(ddl("mysql"))
    assert "CREATE DATABASE IF NOT EXISTS dtm_barrier" in mysql
    assert "UNIQUE key(gid, branch_id, op, barrier_id)" in mysql
    pg = "\n".join(ddl(Dialect.POSTGRES))
    assert "CREATE SEQUENCE IF NOT EXISTS dtm_barrier.barrier_seq" in pg
    assert "CONSTRAINT uniq_barrier unique(gid, branch_id, op, barrier_id)" in pg
    lite = ddl("sqlite", "barrier")
    assert lite[0].startswith("CREATE TABLE IF NOT EXISTS barrier(")
    for sql in (mysql, pg, lite[0]):
        for column in ("trans_type", "gid", "branch_id", "op", "barrier_id", "reason"):
            assert f"  {column} varchar" in sql


@pytest.mark.parametrize(
    ("op", "added", "decision"),
    [
        ("action", [1], Decision.RUN),
        ("action", [0], Decision.SKIP),  # repeat, or hanging after compensation
        ("compensate", [0, 1], Decision.RUN),
        ("compensate", [1, 1], Decision.SKIP),  # null compensation
        ("compensate", [0, 0], Decision.SKIP),  # repeat
        ("cancel", [1, 1], Decision.SKIP),
        ("rollback", [1, 1], Decision.SKIP),
        ("confirm", [1], Decision.RUN),
        ("msg", [1], Decision.RUN),
        ("msg", [0], Decision.DUPLICATED),
    ],
)
def test_decision_rules(op: str, added: list[int], decision: Decision) -> None:
    attempt = plan_call("saga", "g", "01", op, "01")
    assert len(attempt.rows) == len(added)
    assert attempt.decide(added) is decision


def test_origin_rows_carry_the_compensating_op_as_reason() -> None:
    attempt = plan_call("tcc", "g", "01", "cancel", "03")
    assert [r.values() for r in attempt.rows] == [
        ("tcc", "g", "01", "try", "03", "cancel"),
        ("tcc", "g", "01", "cancel", "03", "cancel"),
    ]
    assert all(type(v) is str for r in attempt.rows for v in r.values())


def test_package_imports_no_database_driver() -> None:
    drivers = ["aiosqlite", "asyncmy", "asyncpg", "psycopg", "pymysql", "sqlalchemy", "redis"]
    code = (
        "import sys, dtmx.client.barrier\n"
        f"loaded = [m for m in {drivers!r} if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
