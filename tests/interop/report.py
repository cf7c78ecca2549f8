"""What every interop client prints: one JSON object on stdout, read by
crates/hallmark/tests/it/interop.rs, which checks it against the agent's
bundle and its own client. Binary values are base64 (standard alphabet)."""

import base64
import json
import sys


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def emit(client, x509_svids, x509_bundles, jwt_svids, jwt_bundles, validated):
    """x509_svids: [(spiffe_id, [chain DER, leaf first])]; x509_bundles:
    {trust domain: concatenated DER}; jwt_svids: [(spiffe_id, token)];
    jwt_bundles: {trust domain: [key ids]}; validated: the SPIFFE ID
    ValidateJWTSVID returned for the first JWT-SVID."""
    json.dump(
        {
            "client": client,
            "x509_svids": [{"spiffe_id": i, "chain": [b64(c) for c in chain]} for i, chain in x509_svids],
            "x509_bundles": {td: b64(der) for td, der in x509_bundles.items()},
            "jwt_svids": [{"spiffe_id": i, "token": t} for i, t in jwt_svids],
            "jwt_bundles": {td: sorted(kids) for td, kids in jwt_bundles.items()},
            "validated": validated,
        },
        sys.stdout,
    )
    sys.stdout.write("\n")
