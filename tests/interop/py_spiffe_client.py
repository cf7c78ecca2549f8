"""The Workload API through py-spiffe (PyPI `spiffe`), exactly as an
application uses it: WorkloadApiClient on SPIFFE_ENDPOINT_SOCKET, grpcio
underneath with its default `:authority` (the percent-encoded socket path).

    py_spiffe_client.py AUDIENCE

Fetches X.509-SVIDs, the X.509 bundles, a JWT-SVID for AUDIENCE and the JWT
bundles, validates the JWT-SVID through ValidateJWTSVID and locally against
the JWT bundle, and prints report.emit's JSON. Any failure: a message on
stderr and exit status 1."""

import importlib.metadata
import sys

from cryptography.hazmat.primitives.serialization import Encoding
from spiffe import JwtSvid, WorkloadApiClient

import report

TIMEOUT = 30


def main(audience: str) -> None:
    with WorkloadApiClient(default_timeout=TIMEOUT) as client:
        svids = client.fetch_x509_svids()
        bundles = client.fetch_x509_bundles()
        jwt = client.fetch_jwt_svid(audience={audience})
        jwt_bundles = client.fetch_jwt_bundles()
        validated = client.validate_jwt_svid(jwt.token, audience)
        # py-spiffe's own validation against the bundle it fetched.
        bundle = jwt_bundles.get_bundle_for_trust_domain(jwt.spiffe_id.trust_domain)
        if bundle is None:
            raise SystemExit(f"no JWT bundle for {jwt.spiffe_id.trust_domain}")
        JwtSvid.parse_and_validate(jwt.token, bundle, {audience})
    versions = f"py-spiffe {importlib.metadata.version('spiffe')} (grpcio {importlib.metadata.version('grpcio')})"
    report.emit(
        versions,
        [(str(s.spiffe_id), [c.public_bytes(Encoding.DER) for c in s.cert_chain]) for s in svids],
        {
            str(b.trust_domain): b"".join(a.public_bytes(Encoding.DER) for a in b.x509_authorities)
            for b in bundles.bundles
        },
        [(str(jwt.spiffe_id), jwt.token)],
        {str(b.trust_domain): list(b.jwt_authorities) for b in jwt_bundles.bundles},
        str(validated.spiffe_id),
    )


if __name__ == "__main__":
    try:
        main(sys.argv[1])
    except Exception as e:  # one line for the test's failure message
        print(f"py-spiffe client failed: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
