"""The Workload API through plain grpcio with `:authority` set to the raw
socket path, the way grpc-java connects over a Unix socket. Stubs are
generated at run time from the project's proto/workload.proto with
grpcio-tools (no generated code is committed; workload_stubs.py).

    grpcio_client.py PROTO_DIR AUDIENCE

Socket from SPIFFE_ENDPOINT_SOCKET (unix:///path). Fetches X.509-SVIDs, the
X.509 bundles, a JWT-SVID for AUDIENCE, the JWT bundles, validates the
JWT-SVID through ValidateJWTSVID, and prints report.emit's JSON. Any failure:
a message on stderr and exit status 1."""

import importlib.metadata
import json
import os
import sys
import tempfile

import grpc

import report
from workload_stubs import METADATA, TIMEOUT, first, stubs


def main(proto_dir: str, audience: str) -> None:
    socket = os.environ["SPIFFE_ENDPOINT_SOCKET"].removeprefix("unix://")
    with tempfile.TemporaryDirectory() as out:
        pb, pb_grpc = stubs(proto_dir, out)
        options = [("grpc.default_authority", socket)]
        with grpc.insecure_channel(f"unix:{socket}", options=options) as channel:
            api = pb_grpc.SpiffeWorkloadAPIStub(channel)
            x509 = first(api.FetchX509SVID(pb.X509SVIDRequest(), metadata=METADATA, timeout=TIMEOUT))
            bundles = first(api.FetchX509Bundles(pb.X509BundlesRequest(), metadata=METADATA, timeout=TIMEOUT))
            jwt = api.FetchJWTSVID(pb.JWTSVIDRequest(audience=[audience]), metadata=METADATA, timeout=TIMEOUT)
            jwt_bundles = first(api.FetchJWTBundles(pb.JWTBundlesRequest(), metadata=METADATA, timeout=TIMEOUT))
            token = jwt.svids[0].svid
            request = pb.ValidateJWTSVIDRequest(audience=audience, svid=token)
            validated = api.ValidateJWTSVID(request, metadata=METADATA, timeout=TIMEOUT)
    report.emit(
        f"grpcio {importlib.metadata.version('grpcio')}, :authority {socket}",
        [(s.spiffe_id, split_der(s.x509_svid)) for s in x509.svids],
        dict(bundles.bundles),
        [(s.spiffe_id, s.svid) for s in jwt.svids],
        {td: [k["kid"] for k in json.loads(jwks)["keys"]] for td, jwks in jwt_bundles.bundles.items()},
        validated.spiffe_id,
    )


def split_der(chain: bytes) -> list:
    """Concatenated DER certificates, one by one (each is a SEQUENCE with a long-form length)."""
    certs = []
    while chain:
        if chain[0] != 0x30 or chain[1] & 0x80 == 0:
            raise SystemExit("certificate chain is not DER SEQUENCEs with long-form lengths")
        n = chain[1] & 0x7F
        length = 2 + n + int.from_bytes(chain[2 : 2 + n], "big")
        certs.append(chain[:length])
        chain = chain[length:]
    return certs


if __name__ == "__main__":
    try:
        main(sys.argv[1], sys.argv[2])
    except grpc.RpcError as e:
        print(f"grpcio client failed: {e.code()}: {e.details()}", file=sys.stderr)
        sys.exit(1)
    except Exception as e:
        print(f"grpcio client failed: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
