"""The server's name for the DTM gRPC stubs, which live in the shared `dtmx.proto`.

The SDK and the server use the same generated modules: protobuf registers each message name
once per process, so two copies could not be imported side by side.
"""

from dtmx.proto import dtmgimp_pb2, dtmgimp_pb2_grpc

__all__ = ["dtmgimp_pb2", "dtmgimp_pb2_grpc"]
