"""Cluster members as the plugin sees them: their state, and an LXD fault told as "member X is offline".

A member whose daemon died stays ONLINE in the cluster's database until the heartbeats miss it (about 20 s
by default), but every call forwarded to it fails at once with "Unable to connect to: ADDRESS" (or, for a
listing that fans out, "Missing event connection with target cluster member"); its instances come back in
listings with no config and status Error. :func:`explain` turns such a fault into one line naming the
member. No pytest here.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from typing import Any

import pylxd

from pytest_lxdsnap.lxd import lxdapi
from pytest_lxdsnap.lxd.lxdapi import LXD_FAULTS, describe

ONLINE = "Online"
UNREACHABLE = re.compile(r"Unable to connect to:? ?(\S+?:\d+)")
FANOUT = "Missing event connection with target cluster member"
PROBE_TIMEOUT = 2.0
"""Seconds to wait for a member's address to accept a connection."""


@dataclass(frozen=True)
class MemberState:
    """One member: its name, address, LXD's status (Online, Offline, Evacuated ...) and message."""

    name: str
    address: str
    status: str
    message: str

    @property
    def usable(self) -> bool:
        return self.status == ONLINE


def member_states(client: pylxd.Client) -> list[MemberState]:
    """Every member of the cluster the client reaches ([] on a standalone server)."""
    if not lxdapi.clustered(client):
        return []
    found = []
    for record in lxdapi.listing(client.api.cluster.members):
        address = str(record.get("url", "")).removeprefix("https://")
        found.append(MemberState(record["server_name"], address, str(record.get("status", "")),
                                 str(record.get("message", ""))))
    return found


def answers(client: pylxd.Client, member: MemberState, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether ``member``'s daemon answers now. LXD still lists a member whose daemon just died as Online (until
    the heartbeats miss it), so: a TCP connection to its address first (refused at once when it is down); only
    when that fails (the address may just be out of this machine's reach, on a real multi-host cluster), the
    cluster is asked to forward a request to it (which LXD gives up on after about 10 s). A refused connection
    needs no more asking: the host is there and nothing listens."""
    host, _, port = member.address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return True
    except ConnectionRefusedError:
        return False  # the host is there and nothing listens: the daemon is down
    except (OSError, ValueError):
        pass
    try:
        client.api.get(params={"target": member.name})
    except LXD_FAULTS:
        return False
    return True


def usable_members(client: pylxd.Client) -> tuple[list[MemberState], list[MemberState]]:
    """The cluster's members now: those that serve instances, and those that do not (offline, evacuated, or
    not answering although LXD has not noticed yet), the latter with the reason as their status."""
    good, bad = [], []
    for member in member_states(client):
        if not member.usable:
            bad.append(member)
        elif not answers(client, member):
            bad.append(MemberState(member.name, member.address, "Offline",
                                   "its daemon does not answer (LXD has not noticed yet)"))
        else:
            good.append(member)
    return good, bad


def unreachable_member(client: pylxd.Client, exc: BaseException) -> MemberState | None:
    """The member an LXD fault shows to be unreachable (its daemon down), or None for any other fault."""
    text = describe(exc)
    match = UNREACHABLE.search(text)
    if match is None and FANOUT not in text:
        return None
    try:
        states = member_states(client)
    except LXD_FAULTS:
        return None
    if match is not None:
        return next((m for m in states if m.address == match.group(1)), None)
    down = [m for m in states if not m.usable]
    return down[0] if len(down) == 1 else None


def offline_text(member: MemberState) -> str:
    return (f"cluster member {member.name!r} ({member.address}) is offline: its daemon does not answer. "
            f"Tests on its containers fail until it is back; then `lxdsnap gc` restores and removes what a "
            f"session left there")


def explain(client: pylxd.Client, exc: BaseException) -> str:
    """:func:`~pytest_lxdsnap.lxd.lxdapi.describe`, naming the cluster member when the fault is that it is down."""
    member = unreachable_member(client, exc)
    if member is None:
        return describe(exc)
    return f"{offline_text(member)} ({describe(exc)})"


def on_offline_member(record: dict[str, Any]) -> bool:
    """An instance listed while its member is unreachable: LXD has no config for it and says Error."""
    return record.get("config") is None and record.get("status") == "Error"
