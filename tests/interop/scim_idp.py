"""Plays an identity provider against a SCIM service provider with
scim2-client: a joiner, a mover, a leaver and a deletion.

    scim_idp.py BASE_URL TOKEN

1. joiner: user `alice` (with an email) is created and put in group `eng`;
2. mover: alice moves from `eng` to `ops` (a PATCH of each group's members);
3. leaver: alice is set `active: false` (a PATCH of the user);
4. user `bob` is created and then DELETEd.

Prints one JSON line with the ids it made, for the caller to check the
effects through the admin API. Any error of the server stops it (exit 1).
"""

import json
import sys

from httpx2 import Client
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_models import Email, Group, GroupMember, PatchOp, PatchOperation, SearchRequest, User


def main() -> int:
    base, token = sys.argv[1], sys.argv[2]
    http = Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    scim = SyncSCIMClient(http)
    scim.discover()

    # 1. Joiner.
    alice = scim.create(
        User(user_name="alice", display_name="Alice", emails=[Email(value="alice@example.org", primary=True)], active=True)
    )
    eng = scim.create(Group(display_name="eng", members=[GroupMember(value=alice.id, type="User")]))
    ops = scim.create(Group(display_name="ops"))
    found = scim.query(User, query_parameters=SearchRequest(filter='userName eq "ALICE"'))
    assert found.total_results == 1 and found.resources[0].id == alice.id, found

    # 2. Mover: out of eng, into ops.
    scim.modify(Group, eng.id, PatchOp[Group](operations=[
        PatchOperation(op="remove", path=f'members[value eq "{alice.id}"]'),
    ]))
    scim.modify(Group, ops.id, PatchOp[Group](operations=[
        PatchOperation(op="add", path="members", value=[{"value": alice.id, "type": "User"}]),
    ]))
    now = scim.query(User, alice.id)
    assert [g.display for g in now.groups or []] == ["ops"], now.groups

    # 3. Leaver.
    left = scim.modify(User, alice.id, PatchOp[User](operations=[
        PatchOperation(op="replace", path="active", value=False),
    ]))
    assert left is None or left.active is False, left

    # 4. Another user, deleted.
    bob = scim.create(User(user_name="bob", emails=[Email(value="bob@example.org")]))
    scim.delete(User, bob.id)

    print(json.dumps({"alice": alice.id, "bob": bob.id, "eng": eng.id, "ops": ops.id}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
