"""What the plain-grpcio Workload API clients share: stubs generated at run
time from the project's proto/workload.proto with grpcio-tools (no generated
code is committed), the security header, and reading a server stream's first
message."""

import importlib.resources
import sys

from grpc_tools import protoc

TIMEOUT = 30
METADATA = [("workload.spiffe.io", "true")]


def stubs(proto_dir: str, out: str):
    well_known = str(importlib.resources.files("grpc_tools") / "_proto")
    args = ["protoc", f"-I{proto_dir}", f"-I{well_known}", f"--python_out={out}", f"--grpc_python_out={out}"]
    if protoc.main(args + ["workload.proto"]) != 0:
        raise SystemExit(f"grpc_tools.protoc failed on {proto_dir}/workload.proto")
    sys.path.insert(0, out)
    import workload_pb2
    import workload_pb2_grpc

    return workload_pb2, workload_pb2_grpc


def first(stream):
    """The first message of a server stream, then cancel it."""
    try:
        return next(stream)
    finally:
        stream.cancel()
