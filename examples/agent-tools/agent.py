"""A small AI agent (its plan is scripted; no model is needed) calling tools
with Hallmark task credentials from the SPIFFE Workload API (py-spiffe).

    agent.py --spiffe-id spiffe://example.org/agent/triage \\
        http://127.0.0.1:8701/tickets/read http://127.0.0.1:8702/mail/send

Each argument is one tool call, `URL/TOOL/ACTION`: the agent asks the Workload
API for a JWT-SVID with the tool's name as audience, fresh for every call (the
agent caches it until its refresh point), and `POST`s to `URL/ACTION` with it.
Run it under `hallmark task run`: outside a task its entry gives it nothing.

With `--wait-between FILE`, before each call after the first it waits until
FILE exists, then removes it (so a person, or a test, can act between calls).
Each result is printed on stdout as one JSON line; the exit status is 0.
"""

import argparse
import json
import os
import time
import urllib.error
import urllib.request

from spiffe import SpiffeId, WorkloadApiClient


def call(client: WorkloadApiClient, spiffe_id: SpiffeId, target: str) -> dict:
    base, tool, action = target.rsplit("/", 2)
    try:
        svid = client.fetch_jwt_svid(audience={tool}, subject=spiffe_id)
    except Exception as e:  # the Workload API refused: no task, out of scope, pending approval
        return {"call": f"{tool}/{action}", "status": "no credential", "reason": str(e)}
    req = urllib.request.Request(
        f"{base}/{action}", data=b"{}", method="POST", headers={"Authorization": f"Bearer {svid.token}"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return {"call": f"{tool}/{action}", "status": r.status, **json.load(r)}
    except urllib.error.HTTPError as e:
        return {"call": f"{tool}/{action}", "status": e.code, **json.load(e)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spiffe-id", required=True, help="the agent's SPIFFE ID (its entry is `--bind task`)")
    p.add_argument("--wait-between", help="wait for this file to appear before each call after the first")
    p.add_argument("calls", nargs="+", metavar="URL/TOOL/ACTION")
    a = p.parse_args()
    spiffe_id = SpiffeId(a.spiffe_id)
    with WorkloadApiClient() as client:
        for i, target in enumerate(a.calls):
            if i > 0 and a.wait_between:
                while not os.path.exists(a.wait_between):
                    time.sleep(0.05)
                os.remove(a.wait_between)
            print(json.dumps(call(client, spiffe_id, target)), flush=True)


if __name__ == "__main__":
    main()
