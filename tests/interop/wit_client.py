"""WIT-SVIDs through plain grpcio, verified independently of Hallmark with
PyJWT. Stubs are generated at run time from the project's
proto/workload.proto with grpcio-tools (no generated code is committed), as
grpcio_client.py does.

    wit_client.py PROTO_DIR fetch AUDIENCE [SPIFFE_ID]
    wit_client.py PROTO_DIR watch [SPIFFE_ID]

Socket from SPIFFE_ENDPOINT_SOCKET (unix:///path).

`fetch` takes the first FetchWITSVID message (only SPIFFE_ID's WIT when
given) and the first FetchWITBundles message, and for the first WIT:

- verifies it with PyJWT against the `wit-svid` keys of its trust domain's
  JWKS: ES256, header `typ` `wit+jwt` and a `kid` the JWKS has, `exp`, `iat`,
  `jti`, `sub`, and no `aud`; its `cnf.jwk` must be the public part of
  `wit_svid_key`;
- makes a Workload Proof Token with the WIT's private key (header `typ`
  `wpt+jwt`; claims `aud` AUDIENCE, `exp`, `jti`, and `wth`, the base64url
  SHA-256 of the WIT as sent) and verifies it with PyJWT against `cnf.jwk`,
  with the `wth` check, as a relying party would.

It prints one JSON object: what was received and checked. `watch` prints
one JSON line per FetchWITSVID message (`spiffe_id`, `jti`, `exp`), flushed,
until the stream ends or the process is killed.

A refused call prints `{"error": CODE, "details": ...}` and exits 2; any
other failure: a message on stderr and exit status 1."""

import base64
import hashlib
import json
import os
import sys
import tempfile
import time
import uuid

import grpc
import jwt

from workload_stubs import METADATA, TIMEOUT, first, stubs


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def verify_wit(token: str, jwks: dict) -> tuple:
    """The WIT's header and claims, verified against the `wit-svid` keys."""
    header = jwt.get_unverified_header(token)
    if header.get("typ") != "wit+jwt":
        raise SystemExit(f"WIT header typ is {header.get('typ')!r}, not wit+jwt")
    keys = {k["kid"]: k for k in jwks["keys"] if k.get("use") == "wit-svid" and k.get("kid")}
    if header.get("kid") not in keys:
        raise SystemExit(f"WIT kid {header.get('kid')!r} is not among the wit-svid keys {sorted(keys)}")
    key = jwt.PyJWK(keys[header["kid"]], algorithm="ES256").key
    claims = jwt.decode(
        token,
        key,
        algorithms=["ES256"],
        options={"require": ["exp", "iat", "jti", "sub"], "verify_aud": False},
    )
    if "aud" in claims:
        raise SystemExit("a WIT must have no aud")
    if not claims["sub"].startswith("spiffe://"):
        raise SystemExit(f"WIT sub {claims['sub']!r} is not a SPIFFE ID")
    return header, claims


def proof(wit: str, private_jwk: dict, audience: str) -> str:
    """A Workload Proof Token for `audience`, signed with the WIT's key."""
    key = jwt.PyJWK(private_jwk, algorithm="ES256").key
    now = int(time.time())
    claims = {
        "aud": audience,
        "exp": now + 60,
        "iat": now,
        "jti": str(uuid.uuid4()),
        "wth": b64url(hashlib.sha256(wit.encode()).digest()),
    }
    return jwt.encode(claims, key, algorithm="ES256", headers={"typ": "wpt+jwt"})


def verify_proof(wpt: str, wit: str, bound: dict, audience: str) -> dict:
    """A relying party's check of a WPT: signed by the WIT's bound key, for
    this audience, and naming this WIT."""
    if jwt.get_unverified_header(wpt).get("typ") != "wpt+jwt":
        raise SystemExit("WPT header typ is not wpt+jwt")
    key = jwt.PyJWK(bound, algorithm="ES256").key
    claims = jwt.decode(wpt, key, algorithms=["ES256"], audience=audience, options={"require": ["exp", "jti", "aud"]})
    if claims["wth"] != b64url(hashlib.sha256(wit.encode()).digest()):
        raise SystemExit("WPT wth does not hash the WIT")
    return claims


def fetch(api, pb, audience: str, spiffe_id: str) -> dict:
    wits = first(api.FetchWITSVID(pb.WITSVIDRequest(spiffe_id=spiffe_id), metadata=METADATA, timeout=TIMEOUT))
    bundles = first(api.FetchWITBundles(pb.WITBundlesRequest(), metadata=METADATA, timeout=TIMEOUT))
    jwks = {td: json.loads(text) for td, text in bundles.bundles.items()}
    svid = wits.svids[0]
    td = "spiffe://" + svid.spiffe_id.removeprefix("spiffe://").split("/")[0]
    header, claims = verify_wit(svid.wit_svid, jwks[td])
    private = json.loads(svid.wit_svid_key)
    public = {k: v for k, v in private.items() if k != "d"}
    if claims["cnf"]["jwk"] != public:
        raise SystemExit(f"cnf.jwk {claims['cnf']['jwk']} is not the public part of wit_svid_key")
    wpt = proof(svid.wit_svid, private, audience)
    wpt_claims = verify_proof(wpt, svid.wit_svid, claims["cnf"]["jwk"], audience)
    # A proof for another audience, or of another WIT, is refused.
    try:
        verify_proof(wpt, svid.wit_svid, claims["cnf"]["jwk"], audience + "-other")
        raise SystemExit("a WPT verified for another audience")
    except jwt.InvalidAudienceError:
        pass
    return {
        "client": f"grpcio {grpc.__version__}, PyJWT {jwt.__version__}",
        "spiffe_ids": [s.spiffe_id for s in wits.svids],
        "hint": svid.hint,
        "header": header,
        "claims": claims,
        "private_key_members": sorted(private),
        # The workload's own key, for the test to look for in logs.
        "key": {"kty": private["kty"], "crv": private["crv"], "d": private["d"]},
        "bundles": {
            td: [{"kid": k.get("kid"), "use": k.get("use"), "kty": k.get("kty")} for k in j["keys"]]
            for td, j in jwks.items()
        },
        "wpt": {"header": jwt.get_unverified_header(wpt), "claims": wpt_claims},
    }


def watch(api, pb, spiffe_id: str) -> None:
    for msg in api.FetchWITSVID(pb.WITSVIDRequest(spiffe_id=spiffe_id), metadata=METADATA):
        for s in msg.svids:
            claims = jwt.decode(s.wit_svid, options={"verify_signature": False})
            print(json.dumps({"spiffe_id": s.spiffe_id, "jti": claims["jti"], "exp": claims["exp"]}), flush=True)


def main(proto_dir: str, mode: str, rest: list) -> None:
    socket = os.environ["SPIFFE_ENDPOINT_SOCKET"].removeprefix("unix://")
    with tempfile.TemporaryDirectory() as out:
        pb, pb_grpc = stubs(proto_dir, out)
        options = [("grpc.default_authority", socket)]
        with grpc.insecure_channel(f"unix:{socket}", options=options) as channel:
            api = pb_grpc.SpiffeWorkloadAPIStub(channel)
            if mode == "fetch":
                print(json.dumps(fetch(api, pb, rest[0], rest[1] if len(rest) > 1 else "")))
            elif mode == "watch":
                watch(api, pb, rest[0] if rest else "")
            else:
                raise SystemExit(f"unknown mode {mode!r} (fetch, watch)")


if __name__ == "__main__":
    try:
        main(sys.argv[1], sys.argv[2], sys.argv[3:])
    except grpc.RpcError as e:
        print(json.dumps({"error": e.code().name, "details": e.details()}), flush=True)
        sys.exit(2)
    except Exception as e:
        print(f"wit client failed: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
