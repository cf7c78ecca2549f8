"""Runs scim2-tester's whole check suite against a SCIM service provider.

    scim_check.py BASE_URL TOKEN

BASE_URL is the SCIM base (http://HOST:PORT/scim/v2), TOKEN a bearer token
allowed to provision. Every check's status is printed, then one JSON line
with the counts. Exits 1 when any check ended in ERROR or CRITICAL (a
violated MUST), 0 otherwise.
"""

import json
import sys

from httpx2 import Client
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import Status, check_server

FAILED = {Status.ERROR, Status.CRITICAL}


def main() -> int:
    base, token = sys.argv[1], sys.argv[2]
    http = Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    results = check_server(SyncSCIMClient(http))
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status.name] = counts.get(r.status.name, 0) + 1
        where = f"[{r.resource_type}] " if r.resource_type else ""
        print(f"{r.status.name:10} {where}{r.title}: {r.reason}")
    failed = sum(1 for r in results if r.status in FAILED)
    print(json.dumps({"checks": len(results), "failed": failed, "statuses": counts}))
    return 1 if failed or not results else 0


if __name__ == "__main__":
    sys.exit(main())
