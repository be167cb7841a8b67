"""The ZFS restore rules (pytest_lxdsnap.safety.zfs) on snapshot records shaped like LXD's API returns them.

Pure logic: no ZFS pool can run here, so the records are made up; what LXD does with such a pool is
documented in the module (file and function names in LXD and Incus).
"""

from __future__ import annotations

from typing import Any

import pytest

from pytest_lxdsnap.lxd.commands import Commands
from pytest_lxdsnap.safety import zfs

NEVER = "0001-01-01T00:00:00Z"  # Go's zero time: how LXD reports "no expiry"
BASE = "lxdsnap-ab12cd34-base"
KEPT = "lxdsnap-ab12cd34-failed-1"
OTHER_BASE = "lxdsnap-ffee0011-base"
NOW = zfs.timestamp_ns("2026-06-01T12:00:00Z")
assert NOW is not None
NOW_S = NOW / 1e9


def snap(name: str, created: str | None, expires: str | None = NEVER) -> dict[str, Any]:
    return {"name": name, "created_at": created, "expires_at": expires, "stateful": False, "config": {}}


def at(clock: str) -> str:
    return f"2026-06-01T{clock}Z"


# -- which snapshots block the restore ---------------------------------------------------------------
def test_baseline_latest_has_no_blockers() -> None:
    snaps = [snap("snap0", at("09:00:00")), snap(BASE, at("10:00:00"))]
    assert zfs.restore_blockers(snaps, BASE) == []


def test_only_snapshot_has_no_blockers() -> None:
    assert zfs.restore_blockers([snap(BASE, at("10:00:00"))], BASE) == []


def test_older_user_snapshots_are_fine() -> None:
    snaps = [snap("snap0", at("08:00:00")), snap("daily-1", at("09:00:00.5")), snap(BASE, at("10:00:00"))]
    assert zfs.restore_blockers(snaps, BASE) == []


def test_newer_user_snapshot_blocks() -> None:
    snaps = [snap("snap0", at("09:00:00")), snap(BASE, at("10:00:00")), snap("snap1", at("10:30:00"))]
    assert zfs.restore_blockers(snaps, BASE) == ["snap1"]


def test_own_kept_snapshot_blocks() -> None:
    snaps = [snap(BASE, at("10:00:00")), snap(KEPT, at("10:05:00"), at("11:05:00"))]
    assert zfs.restore_blockers(snaps, BASE) == [KEPT]


def test_second_worker_baseline_blocks_the_first_not_itself() -> None:
    snaps = [snap(BASE, at("10:00:00")), snap(OTHER_BASE, at("10:00:01"))]
    assert zfs.restore_blockers(snaps, BASE) == [OTHER_BASE]
    assert zfs.restore_blockers(snaps, OTHER_BASE) == []


def test_blockers_come_oldest_first_whatever_the_list_order() -> None:
    snaps = [snap("z", at("10:20:00")), snap(BASE, at("10:00:00")), snap("a", at("10:10:00")),
             snap("old", at("09:00:00"))]
    assert zfs.restore_blockers(snaps, BASE) == ["a", "z"]


def test_order_is_by_creation_time_not_name() -> None:
    # "snap10" sorts before "snap2" by name; LXD (ZFS createtxg) goes by creation
    snaps = [snap("snap2", at("10:30:00")), snap(BASE, at("10:00:00")), snap("snap10", at("09:00:00"))]
    assert zfs.restore_blockers(snaps, BASE) == ["snap2"]


def test_nanoseconds_decide() -> None:
    snaps = [snap(BASE, at("10:00:00.000000002")), snap("snap0", at("10:00:00.000000001")),
             snap("snap1", at("10:00:00.000000003"))]
    assert zfs.restore_blockers(snaps, BASE) == ["snap1"]


def test_equal_timestamps_keep_the_api_order() -> None:
    # LXD lists by creation date, then database id (creation order): the list order breaks ties
    same = at("10:00:00")
    assert zfs.restore_blockers([snap(BASE, same), snap("snap1", same)], BASE) == ["snap1"]
    assert zfs.restore_blockers([snap("snap0", same), snap(BASE, same)], BASE) == []


def test_time_zones_are_compared_as_instants() -> None:
    snaps = [snap(BASE, "2026-06-01T12:00:00+02:00"), snap("snap1", "2026-06-01T10:30:00Z"),
             snap("snap0", "2026-06-01T09:59:59.999999999Z")]
    assert zfs.restore_blockers(snaps, BASE) == ["snap1"]


def test_expired_but_not_yet_pruned_snapshot_still_blocks() -> None:
    expired = snap("hourly-3", at("10:30:00"), at("11:00:00"))
    snaps = [snap(BASE, at("10:00:00")), expired]
    assert zfs.is_expired(expired, NOW_S)
    assert zfs.restore_blockers(snaps, BASE) == ["hourly-3"]


def test_expiry_states() -> None:
    assert not zfs.is_expired(snap("a", at("10:00:00")), NOW_S)  # no expiry
    assert not zfs.is_expired(snap("a", at("10:00:00"), None), NOW_S)  # Incus: null
    assert not zfs.is_expired(snap("a", at("10:00:00"), at("12:00:01")), NOW_S)
    assert zfs.is_expired(snap("a", at("10:00:00"), at("12:00:00")), NOW_S)


def test_snapshot_without_creation_time_counts_as_newer() -> None:
    snaps = [snap("odd", None), snap(BASE, at("10:00:00")), snap("zero", NEVER), snap("old", at("09:00:00"))]
    assert zfs.restore_blockers(snaps, BASE) == ["odd", "zero"]


def test_baseline_without_creation_time_is_blocked_by_every_other_snapshot() -> None:
    snaps = [snap("old", at("09:00:00")), snap(BASE, "garbage")]
    assert zfs.restore_blockers(snaps, BASE) == ["old"]


def test_missing_baseline_is_an_error() -> None:
    with pytest.raises(LookupError, match=BASE):
        zfs.restore_blockers([snap("snap0", at("09:00:00"))], BASE)


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-06-01T10:00:00Z", 1780308000 * 10**9),
    ("2026-06-01T10:00:00.5Z", 1780308000 * 10**9 + 500_000_000),
    ("2026-06-01T10:00:00.123456789123Z", 1780308000 * 10**9 + 123_456_789),
    ("2026-06-01T11:00:00+01:00", 1780308000 * 10**9),
    (NEVER, None), ("", None), (None, None), ("yesterday", None), ("2026-13-01T10:00:00Z", None),
])
def test_timestamps(text: str | None, expected: int | None) -> None:
    assert zfs.timestamp_ns(text) == expected


# -- LXD's configuration -----------------------------------------------------------------------------
@pytest.mark.parametrize(("volume", "pool", "enabled"), [
    ({}, {}, False),
    ({}, {"volume.zfs.remove_snapshots": "true"}, True),
    ({"zfs.remove_snapshots": "false"}, {"volume.zfs.remove_snapshots": "true"}, False),
    ({"zfs.remove_snapshots": ""}, {"volume.zfs.remove_snapshots": "true"}, False),  # the volume's key wins
    ({"zfs.remove_snapshots": "True"}, {}, True),
    ({"zfs.remove_snapshots": "off"}, {}, False),
    ({"zfs.remove_snapshots": "0"}, {}, False),
])
def test_remove_snapshots(volume: dict[str, str], pool: dict[str, str], enabled: bool) -> None:
    assert zfs.remove_snapshots_enabled(volume, pool) is enabled


@pytest.mark.parametrize(("error", "kind"), [
    ('Failed restoring snapshot rootfs: Snapshot "lxdsnap-ab12cd34-base" cannot be restored due to subsequent '
     "snapshot(s). Set zfs.remove_snapshots to override", "newer"),
    ('Snapshot "lxdsnap-ab12cd34-base" cannot be restored due to subsequent internal snapshot(s) (from a copy)',
     "internal"),
    ('Snapshot "snap1" cannot be restored due to snapshot "snap1" having 2 dependent clone(s) which prevents '
     "deletion", "clones"),
    ("Instance not found", None),
])
def test_refusal_kind(error: str, kind: str | None) -> None:
    assert zfs.refusal_kind(error) == kind


# -- taking snapshots and copies ---------------------------------------------------------------------
def test_snapshot_allowed_only_off_zfs_while_a_baseline_exists() -> None:
    snaps = [snap("snap0", at("09:00:00")), snap(BASE, at("10:00:00"))]
    assert not zfs.snapshot_allowed("zfs", snaps, [BASE])
    assert zfs.snapshot_allowed("btrfs", snaps, [BASE])
    assert zfs.snapshot_allowed("dir", snaps, [BASE])
    assert zfs.snapshot_allowed("zfs", snaps, [])  # nothing to keep restorable: the first baseline itself
    assert zfs.snapshot_allowed("zfs", snaps, ["gone"])
    assert zfs.newer_snapshots_block_restore("zfs") and not zfs.newer_snapshots_block_restore("lvm")


def test_baselines_of_any_session() -> None:
    snaps = [snap(OTHER_BASE, at("10:01:00")), snap("snap0", at("09:00:00")), snap(KEPT, at("10:02:00")),
             snap(BASE, at("10:00:00")), snap("lxdsnap-reuse-base", at("08:00:00")), snap("my-base", at("07:00:00"))]
    assert zfs.baselines(snaps) == ["lxdsnap-reuse-base", BASE, OTHER_BASE]


@pytest.mark.parametrize(("driver", "pool", "copies_snapshots", "leaves"), [
    ("zfs", {}, False, True),  # zfs.clone_copy defaults to true: a clone of @copy-<uuid>
    ("zfs", {"zfs.clone_copy": "true"}, False, True),
    ("zfs", {"zfs.clone_copy": "rebase"}, False, True),  # LXD 5.0 and Incus 6.0 still clone
    ("zfs", {"zfs.clone_copy": "false"}, False, False),
    ("zfs", {}, True, False),  # full send/receive; the temporary snapshot is destroyed
    ("btrfs", {}, False, False),
])
def test_copy_leaves_snapshot(driver: str, pool: dict[str, str], copies_snapshots: bool, leaves: bool) -> None:
    assert zfs.copy_leaves_snapshot(driver, pool, copies_snapshots=copies_snapshots) is leaves


def test_scheduled_snapshots() -> None:
    assert zfs.scheduled_snapshots({"snapshots.schedule": "@hourly"}) == "@hourly"
    assert zfs.scheduled_snapshots({"snapshots.schedule": ""}) is None
    assert zfs.scheduled_snapshots({}) is None


# -- messages ------------------------------------------------------------------------------------------
def test_refusal_message_names_blockers_and_puts_deleting_user_data_last() -> None:
    snaps = [snap(BASE, at("10:00:00")), snap("snap1", at("10:30:00")), snap(KEPT, at("10:40:00"))]
    blockers = zfs.restore_blockers(snaps, BASE)
    text = zfs.refusal_message("web", "web", BASE, blockers, "tank", Commands(), snapshots=snaps, now=NOW_S)
    assert "ZFS pool 'tank'" in text and "Nothing was changed" in text
    assert "web/snap1 (not made by lxdsnap)" in text
    assert f"web/{KEPT} (a failed test's state kept by --lxd-keep-failed)" in text
    assert "LXD refuses such a restore" in text
    steps = text.split("What you can do:")[1]
    assert steps.index("declare the container") < steps.index("btrfs") < steps.index(f"lxc delete web/{KEPT}")
    assert steps.index(f"lxc delete web/{KEPT}") < steps.index("lxc delete web/snap1")
    assert "only if you no longer need your snapshot web/snap1" in steps
    assert "lxc publish web/snap1" in steps.split("lxc delete web/snap1")[0]


def test_refusal_message_for_expired_and_remove_snapshots_and_incus() -> None:
    snaps = [snap(BASE, at("10:00:00")), snap("hourly-3", at("10:30:00"), at("11:00:00"))]
    text = zfs.refusal_message("web", "web", BASE, ["hourly-3"], "tank", Commands(incus=True), snapshots=snaps,
                               remove_snapshots=True, now=NOW_S)
    assert "it has expired and LXD deletes it within about 60 s" in text
    assert "run the tests again in a minute or two" in text
    assert "LXD would delete them all" in text
    assert "incus snapshot delete web hourly-3" in text and "lxc " not in text


def test_refusal_message_for_a_declared_container() -> None:
    text = zfs.refusal_message("db", "lxdsnap-db-ab12cd34", BASE, [OTHER_BASE], "tank", Commands(),
                               declared=True, now=NOW_S)
    assert "another lxdsnap session's or xdist worker's baseline" in text
    assert "declare the container in pyproject.toml instead" not in text and 'pool = "<name>"' in text


def test_internal_refusal_message() -> None:
    error = f'Snapshot "{BASE}" cannot be restored due to subsequent internal snapshot(s) (from a copy)'
    text = zfs.internal_refusal_message("web", "web", BASE, "tank", Commands(), error)
    assert error in text and "--instance-only" in text and f"lxc restore web {BASE}" in text
    assert "LXD stopped it" in text


def test_snapshot_refusal_messages() -> None:
    keep = zfs.snapshot_refusal_message("web", "web", "tank", Commands(), purpose="keep-failed", blocking=[BASE])
    assert f"web/{BASE}" in keep and "Nothing was changed" in keep and "declare it" in keep
    second = zfs.snapshot_refusal_message("web", "web", "tank", Commands(), purpose="baseline",
                                          blocking=[OTHER_BASE])
    assert "-p no:xdist" in second and f"web/{OTHER_BASE}" in second
