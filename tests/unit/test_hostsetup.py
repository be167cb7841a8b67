"""lxdsnap setup without a daemon: Debian's archive for backports (fake /etc in a tmp dir), where it looks for a
daemon, --undo of what needs none (an apt source it wrote, the plan on fake state), and the atomic,
self-repairing --fast-stop (real dpkg-divert on a tmp hook and database). With the daemon: tests/test_hostsetup.py."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_lxdsnap.errors import LxdSnapError
from pytest_lxdsnap.host import aptsources, daemons, hostsetup, setupundo, stophook
from pytest_lxdsnap.host.setupchanges import Change, ChangeLog, sha256
from pytest_lxdsnap.host.setupundo import Decision, Seen, decide
from pytest_lxdsnap.lxd.backends import INCUS, LXD

from ..helpers import BACKEND, lxdsnap

KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
DEBIAN = f"""Types: deb
# a comment inside the stanza, as Debian's own file has
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: {KEYRING}

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
Signed-By: {KEYRING}
"""
VENDOR = """Types: deb
URIs: https://vendor.example/apt
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/vendor.gpg
"""
INLINE = """Types: deb
URIs: http://mirror.example/debian
Suites: bookworm
Components: main
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 mQINBFxZ9FABEADPEDVv
 -----END PGP PUBLIC KEY BLOCK-----
"""


def fake_root(tmp_path: Path, **files: str) -> Path:
    """A fake / with Debian 12's os-release, Debian's keyring and the given apt sources (name -> text)."""
    (tmp_path / "etc/apt/sources.list.d").mkdir(parents=True)
    (tmp_path / "etc/os-release").write_text('PRETTY_NAME="Debian GNU/Linux 12"\nVERSION_CODENAME=bookworm\n')
    (tmp_path / KEYRING.lstrip("/")).parent.mkdir(parents=True)
    shutil.copy(KEYRING, tmp_path / KEYRING.lstrip("/"))
    for name, text in files.items():
        path = tmp_path / ("etc/apt/sources.list" if name == "sources.list" else f"etc/apt/sources.list.d/{name}")
        path.write_text(text)
    return tmp_path


def backports(root: Path) -> Path:
    return root / "etc/apt/sources.list.d/lxdsnap-backports.sources"


# ---------------------------------------------------------------- finding 1: Debian's archive only


def test_a_vendor_stanza_listed_first_does_not_win_and_the_keyring_is_named_by_path(tmp_path):
    root = fake_root(tmp_path, **{"00-vendor.sources": VENDOR, "debian.sources": DEBIAN})
    written = aptsources.add_backports(root)
    assert written == backports(root)
    text = written.read_text()
    assert "URIs: http://mirror.example/debian\n" in text and "vendor" not in text
    assert f"Suites: bookworm-backports\nComponents: main\nSigned-By: {KEYRING}\n" in text
    assert aptsources.apt_rejects(root) == ""  # apt reads every source, ours included
    assert aptsources.add_backports(root) is None  # idempotent


def test_an_inline_key_block_is_never_copied_nor_trusted(tmp_path):
    root = fake_root(tmp_path, **{"debian.sources": INLINE})
    with pytest.raises(LxdSnapError, match="nothing was written") as info:
        aptsources.add_backports(root)
    assert "inline key" in str(info.value) and f"Signed-By: {KEYRING}" in str(info.value)
    assert not backports(root).exists()
    (root / "etc/apt/sources.list.d/zz-debian.sources").write_text(DEBIAN.replace("mirror.", "mirror2."))
    text = aptsources.add_backports(root).read_text()
    assert "URIs: http://mirror2.example/debian\n" in text and "BEGIN PGP" not in text


def test_one_line_list_with_a_signed_by_option(tmp_path):
    root = fake_root(tmp_path, **{"debian.list": f"# Debian\ndeb [arch=amd64 signed-by={KEYRING}] "
                                                 "http://mirror.example/debian bookworm main contrib\n"
                                                 "deb-src http://mirror.example/debian bookworm main\n"})
    assert aptsources.debian_archive("bookworm", root) == "http://mirror.example/debian"


def test_an_unsigned_source_counts_only_when_apts_release_file_is_signed_by_debian(tmp_path):
    root = fake_root(tmp_path, **{"sources.list": "deb http://mirror.example/debian/ bookworm main\n"})
    with pytest.raises(LxdSnapError, match=r"no Signed-By, and apt's InRelease .* missing") as info:
        aptsources.debian_archive("bookworm", root)
    assert "apt-get update" in str(info.value)
    release = aptsources.release_file("http://mirror.example/debian/", "bookworm", root)
    assert release.name == "mirror.example_debian_dists_bookworm_InRelease"  # apt's own name for it
    release.parent.mkdir(parents=True)
    release.write_text("Origin: Debian\nLabel: Debian\nSuite: stable\n")  # says Debian, signed by nobody
    with pytest.raises(LxdSnapError, match="not signed with"):
        aptsources.debian_archive("bookworm", root)
    real = glob.glob("/var/lib/apt/lists/*_dists_bookworm_InRelease")
    assert real, "this host's apt has no bookworm InRelease: run `apt-get update`"
    shutil.copy(real[0], release)  # what apt downloaded from Debian, signature included
    assert aptsources.debian_archive("bookworm", root) == "http://mirror.example/debian/"


def test_an_existing_backports_entry_is_left_alone(tmp_path):
    root = fake_root(tmp_path, **{"sources.list": "deb http://other.example/debian bookworm-backports main\n",
                                  "debian.sources": DEBIAN})
    assert aptsources.add_backports(root) is None
    assert not backports(root).exists()


def test_no_debian_source_says_what_to_add_and_writes_nothing(tmp_path):
    root = fake_root(tmp_path, **{"vendor.sources": VENDOR, "off.sources": DEBIAN.replace(
        "Types: deb\n#", "Types: deb\nEnabled: no\n#", 1).split("\n\n")[0]})
    before = sorted(os.listdir(root / "etc/apt/sources.list.d"))
    with pytest.raises(LxdSnapError) as info:
        aptsources.add_backports(root)
    message = str(info.value)
    assert "no apt source of Debian's own archive for bookworm" in message
    assert "https://vendor.example/apt in /etc/apt/sources.list.d/vendor.sources: signed by" in message
    assert "mirror.example" not in message  # the disabled stanza is not a source
    assert sorted(os.listdir(root / "etc/apt/sources.list.d")) == before


def test_sources_apt_already_refuses_stop_setup_before_it_writes(tmp_path):
    root = fake_root(tmp_path, **{"debian.sources": DEBIAN, "broken.sources": "Types: deb\nURIs: http://x.example/\n"})
    with pytest.raises(LxdSnapError, match="apt already refuses this host's sources"):
        aptsources.add_backports(root)
    assert not backports(root).exists()


def test_a_source_apt_refuses_is_removed_again(tmp_path, monkeypatch):
    """Whatever is written, apt reads it beside every other source before it stays: here a source whose Signed-By
    conflicts with the host's entry for the same mirror and suite, which makes every `apt-get update` fail."""
    root = fake_root(tmp_path, **{"debian.sources": DEBIAN})
    monkeypatch.setattr(aptsources, "backports_source",
                        lambda uri, suite: f"Types: deb\nURIs: {uri}\nSuites: {suite}-updates\nComponents: main\n"
                                           "Signed-By: /usr/share/keyrings/other.gpg\n")
    with pytest.raises(LxdSnapError, match=r"apt refused .* removed again[\s\S]*Conflicting values .*Signed-By"):
        aptsources.add_backports(root)
    assert not backports(root).exists()


def test_deb822_parsing_keeps_multiline_values_and_skips_disabled_stanzas():
    entries = aptsources.parse_deb822("x.sources", INLINE + "\n" + "types: deb\nenabled: No\nuris: http://a.example/\n"
                                     "suites: bookworm\ncomponents: main\n")
    assert len(entries) == 1
    assert entries[0].signed_by.startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----\n.\nmQINBF")
    assert entries[0].keyrings() == []


# ---------------------------------------------------------------- finding 2: the running daemon first


def test_candidate_sockets_ask_the_environment_and_the_snap_first():
    env = {"LXD_DIR": "/srv/lxd", "INCUS_DIR": "/srv/incus"}
    assert daemons.candidate_sockets(LXD, env) == [
        "/srv/lxd/unix.socket", "/var/snap/lxd/common/lxd/unix.socket", "/var/lib/lxd/unix.socket"]
    assert daemons.candidate_sockets(INCUS, env) == [
        "/srv/incus/unix.socket", "/srv/lxd/unix.socket", "/var/lib/incus/unix.socket"]
    assert daemons.candidate_sockets(LXD, {})[0] == "/var/snap/lxd/common/lxd/unix.socket"


def test_an_endpoint_where_nothing_answers_is_not_installed_over(tmp_path):
    state = tmp_path / "state.json"
    result = lxdsnap("--endpoint", str(tmp_path / "none.socket"), "setup", "--state-file", str(state), timeout=60)
    assert result.returncode == 1
    assert f"nothing answers at {tmp_path / 'none.socket'}: start that daemon, or drop --endpoint" in result.stderr
    assert not state.exists()


# ---------------------------------------------------------------- finding 3: undo of an apt source, for real

def test_undo_removes_an_apt_source_setup_wrote_unless_it_was_edited(tmp_path):
    root = fake_root(tmp_path / "root", **{"debian.sources": DEBIAN})
    state = tmp_path / "state.json"
    written = aptsources.add_backports(root)
    ChangeLog(state, "incus").add("apt-source", path=str(written), sha256=sha256(written))
    written.write_text(written.read_text() + "# edited by the admin\n")
    undo = [sys.executable, "-m", "pytest_lxdsnap.host.cli", "setup", "--incus", "--undo", "--state-file", str(state)]
    result = subprocess.run(undo, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert f"left:   wrote apt source {written}: changed since setup (edited)" in result.stdout
    assert written.exists() and state.exists()

    state.unlink()
    ChangeLog(state, "incus").add("apt-source", path=str(written), sha256=sha256(written))
    result = subprocess.run(undo, capture_output=True, text=True, timeout=60)
    assert f"undone: wrote apt source {written}" in result.stdout, result.stdout + result.stderr
    assert not written.exists() and not state.exists()
    assert (root / "etc/apt/sources.list.d/debian.sources").read_text() == DEBIAN


# ---------------------------------------------------------------- finding 3: the plan, with fake state


def change(kind: str, backend: str = "incus", **data: object) -> Change:
    return Change(kind, backend, dict(data))


@pytest.mark.parametrize(("kind", "seen", "left", "expected"), [
    ("pool", Seen(), [], Decision(True)),
    ("pool", Seen(gone=True), [], Decision(False, "already undone")),
    ("image", Seen(unreachable="the incus daemon at /s does not answer"), [],
     Decision(False, "the incus daemon at /s does not answer: start it and rerun --undo")),
    ("apt-source", Seen(changed="edited"), [], Decision(False, "changed since setup (edited)")),
    ("daemon", Seen(users=tuple(f"instance i{n}" for n in range(7))), [],
     Decision(False, "still in use by instance i0, instance i1, instance i2, instance i3, instance i4 and 2 more")),
    ("package", Seen(), [change("daemon")], Decision(False, "the daemon setup started was left running")),
    ("package", Seen(), [change("daemon", backend="lxd")], Decision(True)),  # another backend's daemon
    ("package", Seen(also_removes=("ubuntu-fan",)), [], Decision(False, "apt would also remove ubuntu-fan")),
    ("apt-source", Seen(), [change("package")], Decision(False, "packages installed from it stay")),
])
def test_decide(kind, seen, left, expected):
    assert decide(change(kind), seen, left) == expected


def fake_host(monkeypatch, seen: dict[str, Seen]) -> list[str]:
    """Undo against a fake host: what it finds per kind, and the actions it takes, in order."""
    actions: list[str] = []
    monkeypatch.setattr(setupundo, "observe", lambda c, removing: seen.get(c.kind, Seen()))
    monkeypatch.setattr(setupundo, "apply", lambda c: actions.append(c.kind))
    monkeypatch.setattr(setupundo, "remove_packages", lambda names: actions.append("remove " + " ".join(names)))
    return actions


def recorded(state: Path) -> list[Change]:
    log = ChangeLog(state, "incus")
    for c in [change("apt-source", path="/x"), change("package", name="incus"),
              change("package", name="incus-client"), change("daemon", socket="/s", how="detached"),
              change("pool", name="p", driver="dir"), change("image", alias="a", fingerprint="f" * 64),
              change("pool", backend="lxd", name="p", driver="dir")]:
        log.backend = c.backend
        log.add(c.kind, **c.data)
    return log.load()


def test_undo_runs_newest_first_and_removes_packages_in_one_call(tmp_path, monkeypatch):
    state = tmp_path / "state.json"
    recorded(state)
    actions = fake_host(monkeypatch, {})
    assert setupundo.undo(INCUS, state, log=lambda line: None)
    assert actions == ["image", "pool", "daemon", "remove incus-client incus", "apt-source"]
    assert [(c.kind, c.backend) for c in ChangeLog(state).load()] == [("pool", "lxd")]  # LXD's side stays


def test_a_daemon_in_use_keeps_its_packages_and_their_source(tmp_path, monkeypatch):
    state = tmp_path / "state.json"
    recorded(state)
    actions = fake_host(monkeypatch, {"daemon": Seen(users=("instance web",))})
    lines: list[str] = []
    assert setupundo.undo(INCUS, state, log=lines.append)
    assert actions == ["image", "pool"]
    assert "left:   installed package incus: the daemon setup started was left running" in lines
    assert "left:   wrote apt source /x: packages installed from it stay" in lines
    assert [c.kind for c in ChangeLog(state).load()] == ["apt-source", "package", "package", "daemon", "pool"]


# ---------------------------------------------------------------- finding 4: atomic, self-repairing --fast-stop


@pytest.fixture
def hook(tmp_path) -> stophook.Hook:
    """lxcfs's stock hook in a tmp dir, and a dpkg database of its own (real dpkg-divert, host untouched)."""
    (tmp_path / "dpkg").mkdir()
    path = tmp_path / "lxc.reboot.hook"
    path.write_text("#!/bin/sh\nsleep 0.5s\n")
    path.chmod(0o755)
    return stophook.Hook(path, tmp_path / "lxc.reboot.hook.distrib", str(tmp_path / "dpkg"))


STOCK = "#!/bin/sh\nsleep 0.5s\n"


def runs_original_on_reboot_only(hook: stophook.Hook) -> bool:
    def trace(target: str) -> str:
        run = subprocess.run(["sh", "-x", str(hook.path)], env={"PATH": "/usr/bin:/bin", "LXC_TARGET": target},
                             capture_output=True, text=True, check=True)
        return run.stderr
    return f"exec {hook.original}" in trace("reboot") and str(hook.original) not in trace("stop")


def test_a_failed_wrapper_write_leaves_the_hook_in_place_and_a_rerun_finishes(hook, monkeypatch):
    real_write = stophook.write_atomic

    def full_disk(target: Path, data: bytes, mode: int) -> None:
        if stophook.MARKER.encode() in data:
            raise OSError(28, "No space left on device")
        real_write(target, data, mode)

    monkeypatch.setattr(stophook, "write_atomic", full_disk)
    with pytest.raises(OSError, match="No space"):
        stophook.enable(hook)
    assert hook.path.read_text() == STOCK and stophook.state(hook) == "stock"  # containers still find a hook
    monkeypatch.setattr(stophook, "write_atomic", real_write)
    assert stophook.enable(hook) and stophook.state(hook) == "fast" and stophook.diverted(hook)
    assert hook.original.read_text() == STOCK and runs_original_on_reboot_only(hook)
    assert stophook.disable(hook) and hook.path.read_text() == STOCK
    assert not hook.original.exists() and not stophook.diverted(hook)
    assert sorted(p.name for p in hook.path.parent.iterdir()) == ["dpkg", "lxc.reboot.hook"]  # no temp files


def test_write_atomic_keeps_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    target = tmp_path / "hook"
    target.write_text("old\n")

    def fail(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError):
        stophook.write_atomic(target, b"new\n", 0o755)
    assert target.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["hook"]


@pytest.mark.parametrize(("fast", "expected"), [(True, "fast"), (False, "stock")])
def test_the_old_rename_first_half_state_is_repaired_both_ways(hook, tmp_path, fast, expected):
    """What the older --fast-stop left when its wrapper write failed: the hook moved aside, nothing in its place."""
    subprocess.run(["dpkg-divert", "--admindir", hook.admindir, "--local", "--rename", "--divert",
                    str(hook.original), "--add", str(hook.path)], check=True, capture_output=True)
    assert not hook.path.exists() and stophook.state(hook) == "broken"
    lines: list[str] = []
    hostsetup.set_fast_stop(fast, lines.append, ChangeLog(tmp_path / "state.json"), hook)
    assert stophook.state(hook) == expected and lines == [f"stop hook: {hook.path} is {expected}"]
    assert stophook.diverted(hook) is fast
    assert (hook.original if fast else hook.path).read_text() == STOCK


def test_fast_stop_is_recorded_and_undone(hook, tmp_path):
    state = tmp_path / "state.json"
    hostsetup.set_fast_stop(True, lambda line: None, ChangeLog(state, BACKEND.name), hook)
    assert [c.kind for c in ChangeLog(state).load()] == ["fast-stop"]
    result = lxdsnap("setup", "--undo", "--state-file", str(state))
    assert f"undone: diverted lxcfs's stop hook {hook.path}" in result.stdout, result.stdout + result.stderr
    assert stophook.state(hook) == "stock" and not stophook.diverted(hook) and not state.exists()
