"""What DTM sends to a workflow's callback, by protocol.

Over HTTP the body is the workflow's input as given; over gRPC the input travels wrapped in
DTM's `workflow.WorkflowData` message (`dtmx/proto/wf.proto`), which is what a DTM
workflow's gRPC `Execute` handler unmarshals.
"""

from __future__ import annotations

from dtmx.core.models import Protocol


def callback_payload(protocol: Protocol, data: bytes) -> bytes:
    """The body of the callback call that resumes a workflow with input `data`."""
    if protocol is Protocol.GRPC:
        # protobuf comes with the grpc extra: a server without it never has gRPC workflows
        from dtmx.proto import wf_pb2

        return bytes(wf_pb2.WorkflowData(Data=data).SerializeToString())
    return data
