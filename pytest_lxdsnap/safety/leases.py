"""Session leases: how a session tells sessions on other hosts (or in other PID namespaces) it is alive.

A live session keeps a profile ``lxdsnap-session-<token>`` (used by no instance) whose config holds its
tag and ``user.lxdsnap.lease``: until when, by the **server's** clock, it counts as alive. A heartbeat
renews it every sixth of :data:`~pytest_lxdsnap.safety.ownership.LEASE_SECONDS` and recreates it if it vanished.
No pytest here.
"""

from __future__ import annotations

import pylxd
from pylxd.exceptions import NotFound

from pytest_lxdsnap.lxd import lxdapi
from pytest_lxdsnap.safety.ownership import (
    LEASE_KEY,
    LEASE_SECONDS,
    OWNER_KEY,
    SESSION_PROFILE_PREFIX,
    SessionIdentity,
    holder_at,
)


def profile_name(identity: SessionIdentity) -> str:
    return f"{SESSION_PROFILE_PREFIX}{identity.token}"


def _where(identity: SessionIdentity) -> str:
    return f"profile:{profile_name(identity)}"


def _config(identity: SessionIdentity, server_now: float) -> dict[str, str]:
    return {OWNER_KEY: identity.tag(_where(identity)), LEASE_KEY: f"{server_now + LEASE_SECONDS:.0f}"}


def _description(identity: SessionIdentity) -> str:
    return f"lxdsnap session lease: host {identity.host}, pid {identity.pid} (used by no instance)"


def open_lease(client: pylxd.Client, identity: SessionIdentity) -> None:
    """Create this session's lease profile."""
    client.api.profiles.post(json={"name": profile_name(identity), "description": _description(identity),
                                   "config": _config(identity, lxdapi.server_now(client)), "devices": {}})


RENEW_TIMEOUT = 10.0
"""Seconds one renewal request may take: renewals come every LEASE_SECONDS / 6, so several fit in a lease."""


def renew_lease(client: pylxd.Client, identity: SessionIdentity) -> None:
    """Push the lease on by LEASE_SECONDS from the server's now; recreate it if someone deleted it."""
    node = client.api.profiles[profile_name(identity)]
    try:
        response = node.get(timeout=RENEW_TIMEOUT)
    except NotFound:
        open_lease(client, identity)
        return
    node.put(json={"description": _description(identity), "devices": {},
                   "config": _config(identity, lxdapi.response_time(response))}, timeout=RENEW_TIMEOUT)


def close_lease(client: pylxd.Client, identity: SessionIdentity) -> None:
    """Delete the lease profile of ``identity`` (only if it carries that session's tag)."""
    node = client.api.profiles[profile_name(identity)]
    try:
        record = node.get().json()["metadata"]
    except NotFound:
        return
    if identity.owns(record.get("config") or {}, _where(identity)):
        node.delete()


def lease_of(client: pylxd.Client, holder: SessionIdentity) -> tuple[str | None, float]:
    """The lease expiry a session last wrote (None without a lease profile), and the server's now."""
    try:
        response = client.api.profiles[profile_name(holder)].get()
    except NotFound:
        return None, lxdapi.server_now(client)
    config = response.json()["metadata"].get("config") or {}
    return (config.get(LEASE_KEY) if holder.owns(config, _where(holder)) else None), lxdapi.response_time(response)


def leases_in(profiles: list[dict[str, object]]) -> dict[SessionIdentity, str | None]:
    """The lease of every session with a lease profile among ``profiles`` (a recursive listing)."""
    found: dict[SessionIdentity, str | None] = {}
    for profile in profiles:
        name = str(profile["name"])
        config = profile.get("config") or {}
        assert isinstance(config, dict)
        holder = holder_at(config, f"profile:{name}") if name.startswith(SESSION_PROFILE_PREFIX) else None
        if holder is not None and profile_name(holder) == name:
            found[holder] = config.get(LEASE_KEY)
    return found
