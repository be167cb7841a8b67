"""A real LXD (or Incus) cluster on this one machine, on loopback, for tests, examples and trying it
(``lxdsnap cluster up N`` / ``lxdsnap cluster down``). No pytest here.

Each member is one more daemon beside the host's own, with a directory of its own (``$LXD_DIR``, or ``$INCUS_DIR``)
under :data:`ROOT`: member ``mI`` lives in ``ROOT/mI`` and listens on ``127.0.0.(I+1):8443`` for the cluster. The
host's main daemon (``/var/lib/lxd``, ``/var/lib/incus``) is never asked or changed: every command here runs with
the member's own directory. Member 1 is bootstrapped by preseed (a ``dir`` pool :data:`POOL`, the default profile's
root disk on it, no network device: no bridge), the others join with a token from member 1. The test image is
imported once, on member 1: a cluster's images serve every member (LXD copies one to a member when it first needs it).

``up`` is idempotent (a member that answers is left as it is; one whose directory exists is started again);
``down`` stops every member (instances and all), unmounts what the daemons left mounted under ``ROOT`` and removes
``ROOT``: nothing stays behind, whatever state ``up`` or a test left.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pytest_lxdsnap.errors import LxdSnapError
from pytest_lxdsnap.lxd.backends import INCUS, LXD, Backend

ROOT = Path("/var/lib/lxdsnap-cluster")
"""Where the members' directories, logs and pid files live (all of it removed by ``down``)."""
POOL = "local"
"""The members' storage pool: a ``dir`` pool, local to each member (no remote storage on one machine)."""
PORT = 8443
MAX_MEMBERS = 9  # 127.0.0.2 .. 127.0.0.10
Log = Callable[[str], None]
_STARTED: dict[Path, subprocess.Popen[bytes]] = {}  # daemons this process started, reaped when they end


@dataclass(frozen=True)
class Member:
    """One member daemon of the loopback cluster."""

    index: int  # 1-based
    root: Path
    backend: Backend = LXD

    @property
    def name(self) -> str:
        return f"m{self.index}"

    @property
    def address(self) -> str:
        return f"127.0.0.{self.index + 1}:{PORT}"

    @property
    def dir(self) -> Path:
        return self.root / self.name

    @property
    def socket(self) -> str:
        return str(self.dir / "unix.socket")

    @property
    def pid_file(self) -> Path:
        return self.root / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.root / f"{self.name}.log"

    @property
    def env(self) -> dict[str, str]:
        """The environment of every command for this member: its own directory, never the host's daemon."""
        key = "INCUS_DIR" if self.backend is INCUS else "LXD_DIR"
        env = {k: v for k, v in os.environ.items() if k not in ("LXD_DIR", "INCUS_DIR")}
        return {**env, key: str(self.dir)}

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None


def members(count: int, root: Path = ROOT, backend: Backend = LXD) -> list[Member]:
    if not 1 <= count <= MAX_MEMBERS:
        raise LxdSnapError(f"a loopback cluster has 1 to {MAX_MEMBERS} members, not {count}")
    return [Member(i, root, backend) for i in range(1, count + 1)]


def existing(root: Path = ROOT, backend: Backend = LXD) -> list[Member]:
    """The members whose directories exist under ``root``, in order."""
    if not root.is_dir():
        return []
    found = sorted(int(p.name[1:]) for p in root.iterdir() if p.is_dir() and p.name[1:].isdigit())
    return [Member(i, root, backend) for i in found]


def _alive(pid: int) -> bool:
    for proc in list(_STARTED.values()):
        if proc.pid == pid and proc.poll() is not None:
            return False  # ours, ended (and reaped now)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return Path(f"/proc/{pid}").exists() and "zombie" not in _proc_state(pid)


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:", 1)[1].split("\n", 1)[0].lower()
    except (OSError, IndexError):
        return ""


def _client(member: Member) -> list[str]:
    return [member.backend.cli]


def run(member: Member, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 120
        ) -> subprocess.CompletedProcess[str]:
    """The backend's client (``lxc``/``incus``) against ``member`` only."""
    done = subprocess.run([*_client(member), *args], input=stdin, capture_output=True, text=True, env=member.env,
                          timeout=timeout, check=False)
    if check and done.returncode:
        raise LxdSnapError(f"`{' '.join([*_client(member), *args])}` on cluster member {member.name} failed: "
                           f"{done.stderr.strip() or done.stdout.strip()}")
    return done


def answers(member: Member) -> bool:
    if not os.path.exists(member.socket):
        return False
    return run(member, "query", "/1.0", check=False, timeout=10).returncode == 0


def start(member: Member) -> None:
    """Start the member's daemon (its directory made first: empty, root-owned, mode 755), wait until ready."""
    if answers(member):
        return
    old = _STARTED.pop(member.dir, None)
    if old is not None:
        old.poll()  # a daemon of ours that was killed: reaped
    member.dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    os.chmod(member.dir, 0o755)
    with open(os.devnull, "rb") as devnull_in, open(member.log_file, "ab") as log:
        proc = subprocess.Popen([*member.backend.daemon, "--logfile", str(member.log_file)], env=member.env,
                                stdin=devnull_in, stdout=log, stderr=log, start_new_session=True, cwd="/")
    member.pid_file.write_text(str(proc.pid))
    _STARTED[member.dir] = proc
    deadline = time.monotonic() + 60
    while not answers(member):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise LxdSnapError(f"cluster member {member.name}'s daemon did not come up; see {member.log_file}")
        time.sleep(0.2)


def rejoin(member: Member, first: Member, timeout: float = 60) -> None:
    """Start ``member`` again (after a kill or a stop) and wait until ``first`` reaches it: a member that answers
    on its socket is not yet one that the others forward to (their event connection to it comes back within
    seconds), and until then listings show its instances without config and operations on it are not found."""
    start(member)
    deadline = time.monotonic() + timeout
    while run(first, "query", f"/1.0?target={member.name}", check=False, timeout=30).returncode:
        if time.monotonic() > deadline:
            raise LxdSnapError(f"cluster member {member.name} is up but {first.name} does not reach it; "
                               f"see {member.log_file}")
        time.sleep(0.5)


def info(member: Member) -> dict[str, object]:
    out = run(member, "query", "/1.0").stdout
    return dict(json.loads(out))


def clustered(member: Member) -> bool:
    env = info(member).get("environment")
    return bool(isinstance(env, dict) and env.get("server_clustered"))


def member_names(first: Member) -> list[str]:
    return [m["server_name"] for m in json.loads(run(first, "query", "/1.0/cluster/members?recursion=1").stdout)]


def bootstrap(first: Member) -> None:
    """Member 1: listen on its loopback address, enable clustering, a dir pool and the default profile's disk."""
    preseed = {
        "config": {"core.https_address": first.address},
        "cluster": {"server_name": first.name, "enabled": True},
        "storage_pools": [{"name": POOL, "driver": "dir"}],
        "profiles": [{"name": "default", "devices": {"root": {"path": "/", "pool": POOL, "type": "disk"}}}],
    }
    _init(first, preseed)


def join(first: Member, member: Member) -> None:
    """``member`` joins the cluster of ``first`` with a token ``first`` hands out."""
    token = run(first, "cluster", "add", member.name).stdout.strip().splitlines()[-1].strip()
    preseed = {"cluster": {
        "enabled": True, "server_name": member.name, "server_address": member.address,
        "cluster_address": first.address, "cluster_token": token,
        "member_config": [{"entity": "storage-pool", "name": POOL, "key": "source", "value": ""}]}}
    _init(member, preseed)


def _init(member: Member, preseed: Mapping[str, object]) -> None:
    argv = ["admin", "init", "--preseed"] if member.backend is INCUS else ["init", "--preseed"]
    tool = "incus" if member.backend is INCUS else "lxd"
    done = subprocess.run([tool, *argv], input=json.dumps(preseed), capture_output=True, text=True,
                          env=member.env, timeout=180, check=False)
    if done.returncode:
        raise LxdSnapError(f"initialising cluster member {member.name} failed: {done.stderr.strip()}; "
                           f"see {member.log_file}, then `lxdsnap cluster down` and try again")


def import_images(first: Member, tarballs: Mapping[str, bytes | Path], log: Log) -> None:
    """Import each image (alias -> tarball) once, on member 1, unless the alias is there."""
    have = {a["name"] for a in json.loads(run(first, "query", "/1.0/images/aliases?recursion=1").stdout)}
    for alias, tarball in tarballs.items():
        if alias in have:
            log(f"image: {alias} present")
            continue
        if isinstance(tarball, bytes):
            path = first.root / f"{alias.replace('/', '-')}.tar.gz"
            path.write_bytes(tarball)
        else:
            path = tarball
        log(f"image: importing {alias} on {first.name} (serves every member)")
        run(first, "image", "import", str(path), "--alias", alias, timeout=600)
        if isinstance(tarball, bytes):
            path.unlink()


def up(count: int, log: Log = print, *, root: Path = ROOT, backend: Backend = LXD,
       images: Mapping[str, bytes | Path] | None = None) -> list[Member]:
    """Stand up (or complete) a ``count``-member cluster; its members. Idempotent."""
    wanted = members(count, root, backend)
    extra = [m for m in existing(root, backend) if m.index > count]
    if extra:
        raise LxdSnapError(f"a cluster of {len(existing(root, backend))} members is up under {root}; "
                           f"`lxdsnap cluster down` first to make one of {count}")
    if not shutil.which(backend.cli):
        raise LxdSnapError(f"no `{backend.cli}` here: run `lxdsnap setup{' --incus' if backend is INCUS else ''}` "
                           "first")
    root.mkdir(mode=0o755, parents=True, exist_ok=True)
    first = wanted[0]
    fresh = not (first.dir / "database").exists()
    start(first)
    if fresh or not clustered(first):
        log(f"member {first.name}: bootstrapping the cluster at {first.address}")
        bootstrap(first)
    else:
        log(f"member {first.name}: up at {first.address}")
    joined = member_names(first)
    for member in wanted[1:]:
        start(member)
        if member.name in joined:
            log(f"member {member.name}: up at {member.address}")
            continue
        log(f"member {member.name}: joining at {member.address}")
        join(first, member)
    import_images(first, images if images is not None else default_images(), log)
    log(f"cluster: {', '.join(m.name for m in wanted)} ONLINE; sockets {', '.join(m.socket for m in wanted)}")
    return wanted


def default_images() -> dict[str, bytes | Path]:
    """The images every loopback cluster gets: the offline busybox test image."""
    from pytest_lxdsnap.host.image import IMAGE_ALIAS, build_image_tarball

    return {IMAGE_ALIAS: build_image_tarball()}


def mounts_under(root: Path) -> list[str]:
    """Mount points at or below ``root``, deepest first."""
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        for line in fh:
            point = line.split()[4].replace("\\040", " ")
            if point == str(root) or point.startswith(f"{root}/"):
                found.append(point)
    return sorted(set(found), key=lambda p: (-p.count("/"), p))


def stop(member: Member, log: Log) -> None:
    """Stop the member's daemon and its instances; a daemon that does not stop in time is killed."""
    pid = member.pid()
    if not answers(member) and (member.dir / "database").exists():
        try:  # killed (a fault test): start it again, so its instances stop cleanly
            start(member)
        except LxdSnapError as exc:
            log(f"member {member.name}: could not start it again to stop it cleanly: {exc}")
    pid = member.pid()
    if answers(member):
        tool = ["incus", "admin", "shutdown"] if member.backend is INCUS else ["lxd", "shutdown"]
        log(f"member {member.name}: shutting down")
        try:
            subprocess.run([*tool, "--timeout", "60"], env=member.env, capture_output=True, timeout=90, check=False)
        except subprocess.TimeoutExpired:
            pass
    if pid is not None:
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            log(f"member {member.name}: killing its daemon (pid {pid})")
            os.kill(pid, signal.SIGKILL)


def down(log: Log = print, *, root: Path = ROOT, backend: Backend = LXD) -> None:
    """Stop every member, unmount what they left under ``root`` and remove ``root``. Idempotent."""
    found = existing(root, backend)
    for member in reversed(found):  # the others first, the bootstrap member last
        stop(member, log)
    for member in found:  # a killed daemon's containers: their processes were in the member's cgroups
        _kill_leftover_monitors(member)
    for point in mounts_under(root):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    left = mounts_under(root)
    if left:
        raise LxdSnapError(f"could not unmount {', '.join(left)}: unmount them, then `lxdsnap cluster down` again")
    if root.exists():
        subprocess.run(["rm", "-rf", "--one-file-system", str(root)], check=True)
        log(f"removed {root}")
    else:
        log(f"nothing at {root}")


def _kill_leftover_monitors(member: Member) -> None:
    """``[lxc monitor] DIR/containers NAME`` processes of a killed daemon's containers (they end the container)."""
    needle = f"{member.dir}/containers".encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline and b"[lxc monitor]" in cmdline:
            try:
                os.kill(int(proc.name), signal.SIGKILL)
            except ProcessLookupError:
                pass
