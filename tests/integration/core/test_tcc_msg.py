"""TCC, 2-phase messages, topics and the operator routes against a real server."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import requests

from tests.integration.core.conftest import TRANSFER, post, saga_body
from tests.support.busi import BusiServer
from tests.support.server import ServerProcess
from tests.support.util import eventually

# test_every_branch_registered_before_a_timeout_is_cancelled registers until the timeout
# refuses one (409): the default MaxBranches (1,000 TCC branches) could answer 400 first on
# a fast machine.
SERVER_EXTRA = {"Limits": {"MaxBranches": 100_000}}


def register(server: ServerProcess, busi: BusiServer, gid: str, bid: str, side: str) -> None:
    r = post(server, "registerBranch", {
        "gid": gid, "branch_id": bid, "trans_type": "tcc", "data": '{"amount": 30}',
        "confirm": f"{busi.url}/{side}Confirm", "cancel": f"{busi.url}/{side}Cancel"})
    assert r.status_code == 200, r.text


def test_tcc_normal(server: ServerProcess, busi: BusiServer, gid: str) -> None:
    assert post(server, "prepare", {"gid": gid, "trans_type": "tcc"}).status_code == 200
    register(server, busi, gid, "01", "TransOut")
    register(server, busi, gid, "02", "TransIn")
    assert post(server, "submit", {"gid": gid, "trans_type": "tcc"}).status_code == 200
    server.wait_status(gid, "succeed")
    assert busi.state.count("TransOutConfirm", gid) == 1
    assert busi.state.count("TransInConfirm", gid) == 1
    assert busi.state.count("TransInCancel", gid) == 0


def test_tcc_rollback_by_abort(server: ServerProcess, busi: BusiServer, gid: str) -> None:
    assert post(server, "prepare", {"gid": gid, "trans_type": "tcc"}).status_code == 200
    register(server, busi, gid, "01", "TransOut")
    register(server, busi, gid, "02", "TransIn")
    r = post(server, "abort", {"gid": gid, "trans_type": "tcc", "rollback_reason": "try failed"})
    assert r.status_code == 200
    q = server.wait_status(gid, "failed")
    assert q["transaction"]["rollback_reason"] == "try failed"
    assert busi.state.count("TransOutCancel", gid) == 1
    assert busi.state.count("TransInCancel", gid) == 1
    assert busi.state.count("TransInConfirm", gid) == 0


def test_tcc_nested_branches_confirmed_children_first(server: ServerProcess, busi: BusiServer,
                                                      gid: str) -> None:
    post(server, "prepare", {"gid": gid, "trans_type": "tcc"})
    register(server, busi, gid, "01", "TransOut")
    register(server, busi, gid, "0101", "TransIn")  # a sub-branch registered by branch 01
    assert post(server, "submit", {"gid": gid, "trans_type": "tcc"}).status_code == 200
    server.wait_status(gid, "succeed")
    # the order the branch service saw the confirms in (times in query are only to the ms)
    confirms = [q["branch_id"] for r, _, q in busi.state.requests
                if q.get("gid") == gid and q.get("op") == "confirm"]
    assert confirms == ["0101", "01"]


def test_tcc_prepared_times_out_and_cancels(server: ServerProcess, busi: BusiServer,
                                            gid: str) -> None:
    # the test server's TimeoutToFail is 1 s: a forgotten TCC is cancelled by the poller
    post(server, "prepare", {"gid": gid, "trans_type": "tcc"})
    register(server, busi, gid, "01", "TransOut")
    q = server.wait_status(gid, "failed")
    assert "Timeout" in q["transaction"]["rollback_reason"]
    assert busi.state.count("TransOutCancel", gid) == 1


def test_register_branch_errors(server: ServerProcess, busi: BusiServer, gid: str) -> None:
    base = {"gid": gid, "branch_id": "01", "trans_type": "tcc", "confirm": "", "cancel": ""}
    r = post(server, "registerBranch", base)  # no such prepared transaction
    assert r.status_code == 409 and r.json()["dtm_result"] == "FAILURE"
    post(server, "prepare", {"gid": gid, "trans_type": "tcc"})
    assert post(server, "registerTccBranch", base).status_code == 200
    r = post(server, "registerBranch", base)
    assert r.status_code == 409 and "already registered" in r.json()["message"]
    r = post(server, "registerBranch", {**base, "branch_id": 2})
    assert r.status_code == 400 and "must be a string" in r.json()["message"]
    r = post(server, "registerBranch", {**base, "trans_type": "saga", "branch_id": "03"})
    assert r.status_code == 400
    post(server, "abort", {"gid": gid, "trans_type": "tcc"})


def msg_body(gid: str, busi: BusiServer, **extra: object) -> dict[str, object]:
    return {"gid": gid, "trans_type": "msg", "query_prepared": f"{busi.url}/QueryPrepared",
            "steps": [{"action": f"{busi.url}/TransOut"}, {"action": f"{busi.url}/TransIn"}],
            "payloads": ['{"a":1}', '{"a":2}'], **extra}


def test_msg_prepare_submit(server: ServerProcess, busi: BusiServer, gid: str) -> None:
    assert post(server, "prepare", msg_body(gid, busi)).status_code == 200
    assert post(server, "prepare", msg_body(gid, busi)).status_code == 200  # idempotent
    assert server.status(gid) == "prepared"
    assert post(server, "submit", msg_body(gid, busi)).status_code == 200
    server.wait_status(gid, "succeed")
    assert busi.state.applied_count("TransIn", gid) == 1
    assert busi.state.count("QueryPrepared", gid) == 0


def test_msg_query_prepared_success(server: ServerProcess, busi: BusiServer, gid: str) -> None:
    assert post(server, "prepare", msg_body(gid, busi)).status_code == 200
    server.wait_status(gid, "succeed")  # after TimeoutToFail the server asks and delivers
    assert busi.state.count("QueryPrepared", gid) == 1
    assert busi.state.applied_count("TransOut", gid) == 1


def test_msg_query_prepared_failure(server: ServerProcess, busi: BusiServer, gid: str) -> None:
    busi.state.set("QueryPrepared", "FAILURE")
    try:
        assert post(server, "prepare", msg_body(gid, busi)).status_code == 200
        server.wait_status(gid, "failed")
    finally:
        busi.state.set("QueryPrepared", "SUCCESS")
    assert busi.state.count("TransOut", gid) == 0


def test_msg_query_prepared_ongoing_then_success(server: ServerProcess, busi: BusiServer,
                                                 gid: str) -> None:
    busi.state.set("QueryPrepared", "ONGOING", "SUCCESS")
    assert post(server, "prepare", msg_body(gid, busi)).status_code == 200
    q = server.wait_status(gid, "succeed")
    assert busi.state.count("QueryPrepared", gid) == 2
    # the call history: the two questions as branch 00, then each step's one call
    asked = [c for c in q["calls"] if c["branch_id"] == "00"]
    assert [(c["op"], c["attempt"], c["result"]) for c in asked] == [
        ("msg", 1, "ONGOING"), ("msg", 2, "SUCCESS")]
    assert "next_retry_time" in asked[0] and "next_retry_time" not in asked[1]
    steps = sorted((c["branch_id"], c["op"], c["result"]) for c in q["calls"]
                   if c["branch_id"] != "00")
    assert steps == [("01", "action", "SUCCESS"), ("02", "action", "SUCCESS")]


def test_msg_action_failure_is_retried_not_fatal(server: ServerProcess, busi: BusiServer,
                                                 gid: str) -> None:
    busi.state.set("TransIn", "FAILURE", "SUCCESS")
    assert post(server, "submit", msg_body(gid, busi)).status_code == 200
    server.wait_status(gid, "succeed")
    assert busi.state.count("TransIn", gid) == 2


def test_msg_abort_and_delay(server: ServerProcess, busi: BusiServer, gid: str) -> None:
    post(server, "prepare", msg_body(gid, busi))
    assert post(server, "abort", msg_body(gid, busi)).status_code == 200
    assert server.status(gid) == "failed"
    body = msg_body(gid + "d", busi, custom_data='{"delay": 1}')
    t0 = time.monotonic()
    assert post(server, "submit", body).status_code == 200
    assert server.status(gid + "d") == "submitted"
    server.wait_status(gid + "d", "succeed")
    # the first action was called no sooner than the delay after the submit
    assert busi.state.times[("TransOut", gid + "d")][0] - t0 >= 0.95


def test_topics(server: ServerProcess, busi: BusiServer, gid: str) -> None:
    topic = f"t-{gid}"
    sub = f"{server.url}/subscribe"
    for route in ("TransIn", "TransOut"):
        r = requests.get(sub, params={"topic": topic, "url": f"{busi.url}/{route}",
                                      "remark": "r"}, timeout=5)
        assert r.status_code == 200, r.text
    r = requests.get(sub, params={"topic": topic, "url": f"{busi.url}/TransIn"}, timeout=5)
    assert r.status_code == 409  # already subscribed
    kv = requests.get(f"{server.url}/queryKV", params={"cat": "topics", "key": topic},
                      timeout=5).json()["kv"]
    assert len(kv) == 1 and "TransOut" in kv[0]["v"]
    body = {"gid": gid, "trans_type": "msg", "steps": [{"action": f"topic://{topic}"}],
            "payloads": ["{}"]}
    assert post(server, "submit", body).status_code == 200
    q = server.wait_status(gid, "succeed")
    assert sorted(b["branch_id"] for b in q["branches"]) == ["01-01", "01-02"]
    r = requests.get(f"{server.url}/unsubscribe", params={"topic": topic,
                                                         "url": f"{busi.url}/TransIn"}, timeout=5)
    assert r.status_code == 200
    assert requests.delete(f"{server.url}/topic/{topic}", timeout=5).status_code == 200
    body["gid"] = gid + "2"
    r = post(server, "submit", body)
    assert r.status_code == 400 and "no subscribers" in r.json()["message"]
    r = requests.get(sub, params={"topic": "", "url": "x"}, timeout=5)
    assert r.status_code == 400


def test_force_stop(server: ServerProcess, busi: BusiServer, gid: str) -> None:
    post(server, "prepare", msg_body(gid, busi))
    assert post(server, "forceStop", {"gid": gid}).status_code == 200
    assert server.status(gid) == "failed"
    r = post(server, "forceStop", {"gid": gid})
    assert r.status_code == 409 and r.json()["dtm_result"] == "FAILURE"
    assert post(server, "forceStop", {"gid": gid + "none"}).status_code == 404


def test_reset_next_cron_time_of_a_finished_transaction_succeeds_unchanged(
        server: ServerProcess, busi: BusiServer, gid: str) -> None:
    # DTM's admin UI offers the button on every transaction; DTM answers SUCCESS
    post(server, "prepare", msg_body(gid, busi))
    assert post(server, "forceStop", {"gid": gid}).status_code == 200
    before = server.query(gid)
    r = post(server, "resetNextCronTime", {"gid": gid})
    assert r.status_code == 200 and r.json()["dtm_result"] == "SUCCESS"
    assert server.query(gid) == before
    r = post(server, "resetNextCronTime", {"gid": gid + "none"})
    assert r.status_code == 404 and gid in r.json()["message"]


def test_transactions_carry_the_row_id(server: ServerProcess, gid: str) -> None:
    """`id` is always sent, as by DTM: the row id on SQL stores, 0 on Redis."""
    gids = [f"{gid}-{i}" for i in range(3)]
    for g in gids:
        assert post(server, "prepare", {"gid": g, "trans_type": "tcc"}).status_code == 200
    listed = {t["gid"]: t["id"] for g in gids for t in requests.get(
        f"{server.url}/all", params={"gid": g}, timeout=5).json()["transactions"]}
    queried = {g: server.query(g)["transaction"]["id"] for g in gids}
    assert listed == queried and len(listed) == 3
    ids = [queried[g] for g in gids]
    assert all(isinstance(i, int) for i in ids)
    if server.conf["Store"]["Driver"] == "redis":
        assert ids == [0, 0, 0]
    else:
        assert 0 < ids[0] < ids[1] < ids[2]  # the row ids, in creation order


def test_query_all_and_cron_routes(server: ServerProcess, busi: BusiServer, gid: str) -> None:
    for i in range(3):
        post(server, "prepare", {"gid": f"{gid}-{i}", "trans_type": "tcc"})
    seen: list[str] = []
    position = ""
    while True:  # page through everything, two at a time
        r = requests.get(f"{server.url}/all", params={
            "limit": 2, "transType": "tcc", "position": position}, timeout=5).json()
        assert len(r["transactions"]) <= 2
        assert all(t["trans_type"] == "tcc" for t in r["transactions"])
        seen += [t["gid"] for t in r["transactions"]]
        position = r["next_position"]
        if not position:
            break
    assert len(seen) == len(set(seen))
    assert {f"{gid}-{i}" for i in range(3)} <= set(seen)
    newest = [g for g in seen if g.startswith(gid)]
    assert newest == [f"{gid}-2", f"{gid}-1", f"{gid}-0"]  # newest first
    one = requests.get(f"{server.url}/all", params={"gid": f"{gid}-0"}, timeout=5).json()
    assert [t["gid"] for t in one["transactions"]] == [f"{gid}-0"]
    assert requests.get(f"{server.url}/query", timeout=5).status_code == 400
    assert requests.get(f"{server.url}/query", params={"gid": "nope"},
                        timeout=5).json()["transaction"] is None
    r = requests.get(f"{server.url}/all", params={"status": "weird"}, timeout=5)
    assert r.status_code == 400
    # the reset routes make a saga waiting out a long retry interval due now
    busi.state.set("TransOut", "ERROR", "ERROR", "SUCCESS")  # the first call of each fails
    try:
        late = [f"{gid}-late{i}" for i in range(2)]
        for g in late:
            r = post(server, "submit", saga_body(g, busi, *TRANSFER, retry_interval=600))
            assert r.status_code == 200
            eventually(lambda g=g: server.query(g)["transaction"]["next_cron_interval"] == 1200)
        r = requests.get(f"{server.url}/resetCronTime", params={"timeout": 0, "limit": 1000},
                         timeout=5)
        assert r.status_code == 200 and r.json()["succeed_count"] >= 2
        assert r.json()["has_remaining"] is False
        server.wait_status(late[0], "succeed")
        server.wait_status(late[1], "succeed")
        g = f"{gid}-late3"  # and the one-gid route
        busi.state.set("TransOut", "ERROR", "SUCCESS")
        assert post(server, "submit", saga_body(g, busi, *TRANSFER, retry_interval=600)
                    ).status_code == 200
        eventually(lambda: server.query(g)["transaction"]["next_cron_interval"] == 1200)
        assert post(server, "resetNextCronTime", {"gid": g}).status_code == 200
        server.wait_status(g, "succeed")
    finally:
        busi.state.set("TransOut", "SUCCESS")
    assert requests.get(f"{server.url}/newGid", timeout=5).json()["gid"]
    assert requests.get(f"http://127.0.0.1:{server.http_port}/api/ping",
                        timeout=5).json() == {"msg": "pong"}
    metrics = requests.get(f"http://127.0.0.1:{server.http_port}/api/metrics", timeout=5).text
    assert "dtm_transaction_process_total" in metrics
    roundtrips = [line for line in metrics.splitlines()
                  if line.startswith("dtmx_store_roundtrips_total ")]
    assert roundtrips and float(roundtrips[0].split()[1]) > 0
    in_flight = [line for line in metrics.splitlines() if line.startswith("dtmx_runs_in_flight ")]
    assert in_flight and float(in_flight[0].split()[1]) >= 0


def test_msg_custom_timeout_to_fail(server: ServerProcess, busi: BusiServer, gid: str) -> None:
    # DTM's TestMsgOptionsTimeoutCustom: the msg's own timeout_to_fail decides the back-check
    t0 = time.monotonic()
    assert post(server, "prepare", msg_body(gid, busi, timeout_to_fail=2)).status_code == 200
    q = server.query(gid)["transaction"]
    assert q["timeout_to_fail"] == 2
    server.wait_status(gid, "succeed")
    # asked after its own 2 s, not the test server's default of 1 s
    assert busi.state.times[("QueryPrepared", gid)][0] - t0 >= 1.9


def test_tcc_branch_headers(server: ServerProcess, busi: BusiServer, gid: str) -> None:
    body = {"gid": gid, "trans_type": "tcc", "branch_headers": {"X-Trace": "abc"}}
    assert post(server, "prepare", body).status_code == 200
    register(server, busi, gid, "01", "TransOut")
    assert post(server, "submit", body).status_code == 200
    server.wait_status(gid, "succeed")
    assert busi.state.headers[("TransOutConfirm", gid)]["X-Trace"] == "abc"


def test_concurrent_subscribes_all_kept(server: ServerProcess, busi: BusiServer, gid: str) -> None:
    # DTM's TestConcurrentUpdateTopic: compare-and-set on the topic's version loses nobody
    from concurrent.futures import ThreadPoolExecutor

    topic = f"c-{gid}"

    def sub(i: int) -> int:
        return requests.get(f"{server.url}/subscribe", params={
            "topic": topic, "url": f"{busi.url}/TransIn?n={i}"}, timeout=10).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(sub, range(8)))
    kv = requests.get(f"{server.url}/queryKV", params={"cat": "topics", "key": topic},
                      timeout=5).json()["kv"]
    import json
    urls = {s["url"] for s in json.loads(kv[0]["v"])}
    assert len(urls) == codes.count(200)
    assert codes.count(200) >= 1 and set(codes) <= {200, 409}


def xa_calls(busi: BusiServer, gid: str) -> list[tuple[str, str, str, str]]:
    return [(r, q["method"], q["branch_id"], q["op"]) for r, _, q in busi.state.requests
            if q.get("gid") == gid]


def test_xa_commit_and_rollback(server: ServerProcess, busi: BusiServer, gid: str) -> None:
    # XA: the server only drives the second phase, POSTing op=commit / op=rollback in
    # registration order (the app did XA START/END/PREPARE in its own database)
    for g, end in ((gid, "submit"), (gid + "r", "abort")):
        assert post(server, "prepare", {"gid": g, "trans_type": "xa"}).status_code == 200
        for bid, route in (("01", "TransOut"), ("02", "TransIn")):
            r = post(server, "registerBranch", {"gid": g, "branch_id": bid, "trans_type": "xa",
                                                "url": f"{busi.url}/{route}", "data": ""})
            assert r.status_code == 200, r.text
        assert post(server, end, {"gid": g, "trans_type": "xa"}).status_code == 200
    server.wait_status(gid, "succeed")
    server.wait_status(gid + "r", "failed")
    assert xa_calls(busi, gid) == [("TransOut", "POST", "01", "commit"),
                                   ("TransIn", "POST", "02", "commit")]
    assert xa_calls(busi, gid + "r") == [("TransOut", "POST", "01", "rollback"),
                                         ("TransIn", "POST", "02", "rollback")]


def test_submit_with_another_type_leaves_the_transaction_alone(server: ServerProcess,
                                                               busi: BusiServer, gid: str) -> None:
    assert post(server, "prepare", {"gid": gid, "trans_type": "tcc"}).status_code == 200
    r = post(server, "submit", msg_body(gid, busi))  # same gid, but as a msg
    assert r.status_code == 400 and "is a tcc" in r.json()["message"]
    assert server.status(gid) == "prepared"
    # abort goes by the stored type, as DTM's does: this is a tcc, so it is cancelled
    assert post(server, "abort", {"gid": gid, "trans_type": "msg"}).status_code == 200
    server.wait_status(gid, "failed")


def test_every_branch_registered_before_a_timeout_is_cancelled(
    server: ServerProcess, busi: BusiServer, gid: str
) -> None:
    """Issue 14's reproduction: registrations back to back while the poller times the TCC
    out (TimeoutToFail is 1 s here), until one is refused (MaxBranches is raised for this
    module, so the refusal is the timeout's, not the limit's). Every registration that answered
    200 must have its cancel called; none may stay prepared under a failed TCC. (The exact
    interleaving is forced, on every store, in tests/integration/stores/test_registration_race.)
    """
    gids = [f"{gid}-{i}" for i in range(2)]

    def register_until_refused(g: str) -> list[str]:
        accepted: list[str] = []
        with requests.Session() as s:
            assert s.post(f"{server.url}/prepare", json={"gid": g, "trans_type": "tcc"},
                          timeout=15).status_code == 200
            for i in range(100_000):
                r = s.post(f"{server.url}/registerBranch", timeout=15, json={
                    "gid": g, "branch_id": f"{i:05d}", "trans_type": "tcc", "data": "{}",
                    "confirm": f"{busi.url}/TransOutConfirm",
                    "cancel": f"{busi.url}/TransOutCancel"})
                if r.status_code != 200:
                    assert r.status_code == 409, r.text
                    return accepted
                accepted.append(f"{i:05d}")
        raise AssertionError("registration was never refused")

    with ThreadPoolExecutor(len(gids)) as pool:
        accepted = dict(zip(gids, pool.map(register_until_refused, gids), strict=True))
    for g in gids:
        q = server.wait_status(g, "failed", timeout=30)
        assert q["transaction"]["rollback_reason"] == "Timeout after 1 seconds"
        ops = {(b["branch_id"], b["op"]): b["status"] for b in q["branches"]}
        assert accepted[g]
        assert {bid for bid, op in ops if op == "cancel"} == set(accepted[g])
        assert [k for k, status in ops.items() if k[1] == "cancel" and status != "succeed"] == []
        assert busi.state.count("TransOutCancel", g) == len(accepted[g])
