"""gRPC protos of the mall and their generated stubs."""
