"""`BranchOwnerHeader`: each branch call names the claim that made it (off by default, as in
DTM). A SQLite server is enough: the header is set where the engine builds a call, the same
for every store."""

from __future__ import annotations

import os
import re

from tests.integration.core.conftest import TRANSFER, post, saga_body
from tests.support.busi import BusiServer
from tests.support.server import ServerProcess


def test_owner_header_names_the_claim_and_is_off_by_default(busi: BusiServer, gid: str
) -> None:
    with ServerProcess(extra={"BranchOwnerHeader": "Dtmx-Owner"}) as on, ServerProcess() as off:
        assert on.proc is not None
        # a client's header of the same name does not pass for ours
        body = saga_body(gid, busi, *TRANSFER,
                         branch_headers={"dtmx-owner": "forged", "X-Tenant": "t42"})
        assert post(on, "submit", body).status_code == 200
        on.wait_status(gid, "succeed")
        sent = {k.lower(): v for k, v in busi.state.headers[("TransIn", gid)].items()}
        token = sent["dtmx-owner"]
        # <host>:<pid>:<tag>:<n>: this server's process, one claim of it
        assert re.fullmatch(rf"{re.escape(os.uname().nodename)}:{on.proc.pid}:[0-9a-f]+:\d+",
                            token), token
        assert sent["x-tenant"] == "t42"
        # both steps ran under the claim the submit took
        out = {k.lower(): v for k, v in busi.state.headers[("TransOut", gid)].items()}
        assert out["dtmx-owner"] == token

        gid2 = gid + "-off"
        assert post(off, "submit", saga_body(gid2, busi, *TRANSFER)).status_code == 200
        off.wait_status(gid2, "succeed")
        assert not any(k.lower() == "dtmx-owner" for k in busi.state.headers[("TransIn", gid2)])
