"""Who is alive, decided without a daemon: proof from this machine (same boot and PID namespace), else the
lease by the server's clock. Pure logic: these need no LXD."""

from __future__ import annotations

import os
from dataclasses import replace

from pytest_lxdsnap.safety.ownership import (
    CREATED_KEY,
    KEPT_KEY,
    KEPT_PLACE_KEY,
    LEGACY,
    OWNER_KEY,
    SessionIdentity,
    foreign_keys,
    holder_at,
    holder_is_dead,
    kept_config,
    kept_until,
    read_tag,
)

SERVER_NOW = 1_000_000.0


def test_this_process_is_alive_whatever_its_lease_says():
    me = SessionIdentity()
    assert me.local_evidence() is True
    assert holder_is_dead(me, None, SERVER_NOW) == (False, f"pid {os.getpid()} in this PID namespace still runs")


def test_a_clock_step_does_not_make_a_live_session_dead():
    me = SessionIdentity()
    stepped = replace(me, started=me.started - 3600)  # wall clock moved; start ticks did not
    assert stepped.local_evidence() is True


def test_a_gone_or_reused_pid_in_this_namespace_is_dead_even_with_a_lease():
    me = SessionIdentity()
    for gone in (replace(me, pid=2**22 + 1), replace(me, ticks=me.ticks + 1)):  # no such pid; a pid reused later
        assert gone.local_evidence() is False
        dead, why = holder_is_dead(gone, str(SERVER_NOW + 60), SERVER_NOW)
        assert dead and "in this PID namespace is gone" in why


def test_another_pid_namespace_machine_or_boot_is_decided_by_the_lease_on_the_servers_clock():
    me = SessionIdentity()
    for elsewhere in (replace(me, pidns="4026531836:1"), replace(me, machine_id="0" * 32),
                      replace(me, boot_id="another-boot"), replace(me, host="twin")):
        assert elsewhere.local_evidence() is None
        assert holder_is_dead(elsewhere, str(SERVER_NOW + 30), SERVER_NOW) == (False, "its lease runs for 30 s more")
        assert holder_is_dead(elsewhere, str(SERVER_NOW - 1), SERVER_NOW) == (True, "its lease ran out")
        assert holder_is_dead(elsewhere, None, SERVER_NOW) == (True, "it holds no lease")
    # the client's clock plays no part: a lease good by the server's clock is good however far ours is ahead
    assert holder_is_dead(replace(me, pidns="x:1"), str(SERVER_NOW + 5), SERVER_NOW)[0] is False


def test_a_tag_binds_to_the_instance_it_was_written_on():
    me = SessionIdentity()
    config = {OWNER_KEY: me.tag("default/web"), CREATED_KEY: me.tag("default/web")}
    assert holder_at(config, "default/web") == me
    assert holder_at(config, "default/web", CREATED_KEY) == me
    assert holder_at(config, "default/web-copy") is None  # `lxc copy web web-copy` copied the keys
    assert holder_at(config, "other/web") is None  # a copy into another project, same name
    assert foreign_keys(config, "default/web") == []
    assert foreign_keys({**config, "user.lxdsnap.power": "Running"}, "default/web-copy") == [
        CREATED_KEY, OWNER_KEY, "user.lxdsnap.power"]


def test_a_kept_state_binds_to_its_instance_too():
    config = kept_config(1234.4, "s:default/lxdsnap-web-ab12-1")
    assert config[KEPT_KEY] == "1234"  # a plain number: what older versions read
    assert kept_until(config, "s:default/lxdsnap-web-ab12-1") == 1234.0
    assert kept_until(config, "s:default/debug-web") is None  # `lxc copy` of a kept state
    assert kept_until({KEPT_KEY: "1234"}, "s:default/lxdsnap-web-ab12-1") is None  # an older plugin's: not ours
    assert foreign_keys(config, "s:default/debug-web") == [KEPT_KEY, KEPT_PLACE_KEY]


def test_a_tag_of_an_older_version_is_respected_and_judged_as_it_judged_itself():
    import json
    import socket

    me = SessionIdentity()
    old = {"token": "0ld", "host": socket.gethostname(), "pid": me.pid, "boot_id": me.boot_id, "started": me.started}
    tag = read_tag(json.dumps(old))
    assert tag is not None and tag.where == LEGACY
    config = {OWNER_KEY: json.dumps(old)}
    assert holder_at(config, "s:default/web") == tag.holder  # no place recorded: held wherever it is
    assert foreign_keys(config, "s:default/web") == []
    assert tag.holder.local_evidence() is True  # its pid and start time: alive
    gone = read_tag(json.dumps({**old, "pid": 2**22 + 1}))
    assert gone is not None and gone.holder.local_evidence() is False
    elsewhere = read_tag(json.dumps({**old, "host": "other"}))
    assert elsewhere is not None and elsewhere.holder.local_evidence() is None  # its lease decides


def test_a_lease_that_is_not_a_number_or_ends_now_counts_as_none_or_run_out():
    elsewhere = replace(SessionIdentity(), host="twin")
    for junk in ("", "soon", "nan-ish"):
        assert holder_is_dead(elsewhere, junk, SERVER_NOW) == (True, "it holds no lease")
    assert holder_is_dead(elsewhere, str(SERVER_NOW), SERVER_NOW) == (True, "its lease ran out")  # not "more than now"
    assert holder_is_dead(elsewhere, f"{SERVER_NOW + 0.5}", SERVER_NOW) == (False, "its lease runs for 0 s more")


def test_what_this_machine_cannot_read_about_itself_is_left_to_the_lease():
    me = SessionIdentity()
    for blind in (replace(me, machine_id="unknown"), replace(me, boot_id="unknown"), replace(me, pidns="unknown")):
        assert blind.local_evidence() is None
        assert holder_is_dead(blind, str(SERVER_NOW + 10), SERVER_NOW)[0] is False


def test_a_proc_of_another_pid_namespace_proves_nothing(monkeypatch):
    from pytest_lxdsnap.safety import ownership

    me = SessionIdentity()
    monkeypatch.setattr(ownership, "_proc_is_ours", lambda: False)  # `unshare --pid` without --mount-proc
    assert me.local_evidence() is None
    assert holder_is_dead(me, None, SERVER_NOW) == (True, "it holds no lease")
    assert holder_is_dead(me, str(SERVER_NOW + 5), SERVER_NOW)[0] is False


def test_an_exited_process_not_yet_reaped_is_dead(monkeypatch):
    from pytest_lxdsnap.safety import ownership

    me = SessionIdentity()
    monkeypatch.setattr(ownership, "_ticks", lambda pid: None)  # /proc/<pid>/stat says Z (or it is gone)
    assert me.local_evidence() is False
    assert holder_is_dead(me, str(SERVER_NOW + 60), SERVER_NOW) == (True, f"pid {me.pid} in this PID namespace is gone")
