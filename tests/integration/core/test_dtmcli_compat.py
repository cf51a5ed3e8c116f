"""PyPI's `dtmcli` 1.7.7 (sync, old, unmodified) driving our server.

Where dtmcli itself is broken the test says so and pins that the bug is on the client side.
"""

from __future__ import annotations

import pytest
from dtmcli import msg as dtm_msg
from dtmcli import saga as dtm_saga
from dtmcli import tcc as dtm_tcc
from dtmcli import utils as dtm_utils

from tests.support.busi import BusiServer
from tests.support.server import ServerProcess


def test_gen_gid(server: ServerProcess) -> None:
    a, b = dtm_utils.gen_gid(server.url), dtm_utils.gen_gid(server.url)
    assert a and b and a != b


def test_saga_success_and_rollback(server: ServerProcess, busi: BusiServer) -> None:
    gid = dtm_utils.gen_gid(server.url)
    s = dtm_saga.Saga(server.url, gid)
    s.add({"amount": 30}, f"{busi.url}/TransOut", f"{busi.url}/TransOutRevert")
    s.add({"amount": 30}, f"{busi.url}/TransIn", f"{busi.url}/TransInRevert")
    s.submit()
    server.wait_status(gid, "succeed")
    assert busi.state.bodies[("TransIn", gid)] == b'{"amount": 30}'

    busi.state.set("TransIn", "FAILURE")
    try:
        gid2 = dtm_utils.gen_gid(server.url)
        s = dtm_saga.Saga(server.url, gid2)
        s.add({"amount": 30}, f"{busi.url}/TransOut", f"{busi.url}/TransOutRevert")
        s.add({"amount": 30}, f"{busi.url}/TransIn", f"{busi.url}/TransInRevert")
        s.submit()
        server.wait_status(gid2, "failed")
    finally:
        busi.state.set("TransIn", "SUCCESS")
    assert busi.state.count("TransOutRevert", gid2) == 1


def test_saga_wait_result_failure_raises(server: ServerProcess, busi: BusiServer) -> None:
    gid = dtm_utils.gen_gid(server.url)
    s = dtm_saga.Saga(server.url, gid)
    s.add({}, f"{busi.url}/TransOut", f"{busi.url}/TransOutRevert")
    s.trans_base.wait_result = True  # dtmcli's Saga has no setter for it (Msg has one)
    busi.state.set("TransOut", "FAILURE")
    try:
        with pytest.raises(dtm_utils.DTMFailureError):
            s.submit()
    finally:
        busi.state.set("TransOut", "SUCCESS")
    assert server.status(gid) == "failed"  # final before the answer came


def test_concurrent_saga_is_broken_in_dtmcli(server: ServerProcess, busi: BusiServer) -> None:
    # dtmcli 1.7.7 reads self.orders, which it never defines: the bug is in the client.
    s = dtm_saga.Saga(server.url, dtm_utils.gen_gid(server.url))
    with pytest.raises(AttributeError, match="orders"):
        s.add_branch_order(1, [0])


def test_tcc_success_and_try_failure(server: ServerProcess, busi: BusiServer) -> None:
    gid = dtm_utils.gen_gid(server.url)

    def branches(t: dtm_tcc.Tcc) -> None:
        t.call_branch({"amount": 30}, f"{busi.url}/TransOutTry", f"{busi.url}/TransOutConfirm",
                      f"{busi.url}/TransOutCancel")
        t.call_branch({"amount": 30}, f"{busi.url}/TransInTry", f"{busi.url}/TransInConfirm",
                      f"{busi.url}/TransInCancel")

    assert dtm_tcc.tcc_global_transaction(server.url, gid, branches) == gid
    server.wait_status(gid, "succeed")
    assert busi.state.count("TransInConfirm", gid) == 1
    assert busi.state.count("TransOutTry", gid) == 1

    busi.state.set("TransInTry", "FAILURE")
    try:
        gid2 = dtm_utils.gen_gid(server.url)
        assert dtm_tcc.tcc_global_transaction(server.url, gid2, branches) == ""
        server.wait_status(gid2, "failed")
    finally:
        busi.state.set("TransInTry", "SUCCESS")
    assert busi.state.count("TransOutCancel", gid2) == 1
    assert busi.state.count("TransInCancel", gid2) == 1
    assert busi.state.count("TransInConfirm", gid2) == 0


def test_msg_prepare_submit_and_wait(server: ServerProcess, busi: BusiServer) -> None:
    gid = dtm_utils.gen_gid(server.url)
    m = dtm_msg.Msg(server.url, gid)
    m.add({"amount": 30}, f"{busi.url}/TransIn")
    m.prepare(f"{busi.url}/QueryPrepared")
    assert server.status(gid) == "prepared"
    m.submit()
    server.wait_status(gid, "succeed")

    gid2 = dtm_utils.gen_gid(server.url)
    m = dtm_msg.Msg(server.url, gid2).set_wait_result()
    m.add({"amount": 30}, f"{busi.url}/TransIn")
    m.submit()  # wait_result: the answer comes after delivery
    assert server.status(gid2) == "succeed"


def test_msg_submit_failure_is_reported(server: ServerProcess, busi: BusiServer) -> None:
    gid = dtm_utils.gen_gid(server.url)
    m = dtm_msg.Msg(server.url, gid)
    m.add({}, f"{busi.url}/TransIn")
    m.prepare(f"{busi.url}/QueryPrepared")
    dtm_msg.dtmimp.trans_call_dtm(server.url, m.trans_base.__dict__, "abort", 5)
    with pytest.raises(dtm_utils.DTMFailureError):
        m.submit()  # a failed msg cannot be submitted: 409, which dtmcli maps to its failure
