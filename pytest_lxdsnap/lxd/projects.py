"""`--lxd-project auto`: an LXD project of the session's own for the instances it creates (no pytest here).

The project shares the default project's images and profiles (``features.images`` and
``features.profiles`` off), so declarations work unchanged; it carries the session's tag, is deleted
at the end of the session when empty, and ``lxdsnap gc`` deletes the projects of dead sessions.
"""

from __future__ import annotations

import copy
from typing import Any

import pylxd
from pylxd.exceptions import NotFound

from pytest_lxdsnap.lxd import lxdapi
from pytest_lxdsnap.safety.ownership import CREATED_KEY, INSTANCE_PREFIX, SessionIdentity, holder_at, kept_until

AUTO = "auto"
SHARED_FEATURES = {"features.images": "false", "features.profiles": "false"}


def project_name(identity: SessionIdentity) -> str:
    return f"{INSTANCE_PREFIX}{identity.token}"


def in_project(client: pylxd.Client, project: str | None) -> pylxd.Client:
    """The same connection, addressing ``project`` (LXD takes the project as a query parameter)."""
    other = copy.copy(client)
    other.api = type(client.api)(client.api._api_endpoint, client.api.session, timeout=client.api._timeout,
                                 project=project)
    other.project = project
    return other


def create(client: pylxd.Client, identity: SessionIdentity) -> str:
    """Create the session's project, tagged with the session; its name."""
    name = project_name(identity)
    body = {"name": name, "description": "pytest-lxdsnap session project (deleted at the end of the session)",
            "config": {**SHARED_FEATURES, CREATED_KEY: identity.tag(f"project:{name}")}}
    client.api.projects.post(json=body)
    return name


def session_projects(client: pylxd.Client) -> list[dict[str, Any]]:
    """Every project a session created (carries a session tag)."""
    records = lxdapi.listing(client.api.projects)
    return [r for r in records if creator(r) is not None]


def creator(project: dict[str, Any]) -> SessionIdentity | None:
    """The session that created a project (its tag, bound to the project's name), if any."""
    return holder_at(project.get("config") or {}, f"project:{project['name']}", CREATED_KEY)


def delete(client: pylxd.Client, name: str, creator: SessionIdentity) -> list[str]:
    """Delete the instances ``creator`` made in project ``name``, then the project if nothing else is in it;
    what was done. Kept failed-test states stay (with the project) until they expire; gc then deletes both."""
    inside = in_project(client, name)
    done = []
    for instance in lxdapi.owned_instances(inside, creator):
        lxdapi.delete_owned_instance(inside, instance, creator)
        done.append(f"deleted instance {instance} (project {name})")
    now = lxdapi.server_now(client)
    for record in lxdapi.listing(inside.api.instances):  # kept failed-test states past their expiry
        until = kept_until(record.get("config") or {}, lxdapi.where(inside, record["name"]))
        if until is not None and until < now:
            lxdapi.delete_kept_instance(inside, record["name"])
            done.append(f"deleted kept instance {record['name']} (project {name})")
    records = lxdapi.listing(inside.api.instances)
    left = [r["name"] for r in records]
    if left:
        return [*done, f"kept project {name}: it still holds {', '.join(left)}"]
    try:
        client.api.projects[name].delete()
    except NotFound:
        return done
    return [*done, f"deleted project {name}"]
