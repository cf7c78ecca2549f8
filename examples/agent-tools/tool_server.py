"""A small tool server for AI agents, verifying Hallmark task credentials.

    tool_server.py --name tickets --port 8701

It is a SPIFFE workload itself (py-spiffe on SPIFFE_ENDPOINT_SOCKET). Each
request `POST /ACTION` (say `/read`) carries `Authorization: Bearer JWT-SVID`.
The tool answers 200 only when, in this order:

1. the token verifies against the trust domain's JWT bundle (signature, expiry,
   and its audience is this tool's name): py-spiffe's own validation;
2. the Workload API's ValidateJWTSVID accepts it: Hallmark's agent refuses a
   revoked token there (a task that ended, or whose objective changed);
3. it carries a `task` claim whose scope lists this tool, and ACTION among
   the actions the scope item allows (no actions listed: any).

Otherwise 401 (not a valid credential) or 403 (valid, outside the scope), with
the reason as JSON. Every answer is printed on stdout as one JSON line.
"""

import argparse
import base64
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from spiffe import JwtSvid, WorkloadApiClient


def claims_of(token: str) -> dict:
    """The token's claims, once its signature has been verified."""
    body = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


def decide(client: WorkloadApiClient, name: str, token: str, action: str):
    """(status, answer) for one request."""
    try:
        bundles = client.fetch_jwt_bundles()
        svid = JwtSvid.parse_insecure(token, {name})
        bundle = bundles.get_bundle_for_trust_domain(svid.spiffe_id.trust_domain)
        if bundle is None:
            return 401, {"error": f"no JWT bundle for {svid.spiffe_id.trust_domain}"}
        JwtSvid.parse_and_validate(token, bundle, {name})
    except Exception as e:  # any verification failure is the caller's
        return 401, {"error": f"invalid token: {e}"}
    try:
        client.validate_jwt_svid(token, name)
    except Exception as e:
        return 401, {"error": f"refused by the Workload API: {e}"}
    claims = claims_of(token)
    task = claims.get("task")
    if not isinstance(task, dict):
        return 403, {"error": "not a task credential: no `task` claim"}
    item = next((s for s in task.get("scope", []) if s.get("aud") == name), None)
    if item is None:
        return 403, {"error": f"`{name}` is not in the scope of task {task.get('id')}"}
    actions = item.get("actions", [])
    if actions and action not in actions:
        return 403, {"error": f"action `{action}` is outside the task's scope for `{name}` ({', '.join(actions)})"}
    return 200, {
        "tool": name,
        "action": action,
        "task": task.get("id"),
        "agent": claims.get("sub"),
        "on_behalf_of": task.get("on_behalf_of"),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", required=True, help="the tool's name: the audience its tokens must carry")
    p.add_argument("--port", type=int, required=True)
    a = p.parse_args()
    client = WorkloadApiClient()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            auth = self.headers.get("Authorization", "")
            action = self.path.strip("/")
            if not auth.startswith("Bearer "):
                status, answer = 401, {"error": "no bearer token"}
            else:
                status, answer = decide(client, a.name, auth.removeprefix("Bearer ").strip(), action)
            body = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            print(json.dumps({"status": status, **answer}), flush=True)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    print(json.dumps({"listening": a.port, "tool": a.name}), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
