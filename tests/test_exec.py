"""exec and files through the REST API, on a real container."""

from __future__ import annotations

import pytest

from pytest_lxdsnap import errors
from pytest_lxdsnap.errors import ExecError, ExecTimeout
from pytest_lxdsnap.handle import Container
from pytest_lxdsnap.lxd import execution, lxdapi
from pytest_lxdsnap.lxd.execution import exec_command


@pytest.fixture
def box(lxd_client, make_instance) -> Container:
    name = make_instance(running=True)
    return Container(lxd_client, "box", name)


def test_exit_code_and_output_are_returned_not_raised(box):
    result = box.exec(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (result.exit_code, result.stdout, result.stderr, result.ok) == (3, "out\n", "err\n", False)


def test_check_raises_with_the_output(box):
    with pytest.raises(ExecError, match=r"sh -c 'exit 4' in t-lxdsnap-\w+ exited 4") as info:
        box.exec("exit 4", check=True)
    assert info.value.result.exit_code == 4


def test_argv_is_not_a_shell_string(box):
    result = box.exec(["echo", "$HOME; rm -rf /"])
    assert result.stdout == "$HOME; rm -rf /\n"
    assert box.exists("/bin/sh")


def test_a_string_runs_with_sh(box):
    assert box.exec("echo $((6 * 7))").stdout == "42\n"


def test_env_cwd_and_user(box):
    result = box.exec(["sh", "-c", 'echo "$GREETING $(pwd) $(id -u)"'], env={"GREETING": "hi"}, cwd="/tmp",
                      user="nobody")
    assert result.stdout == "hi /tmp 65534\n"
    assert box.exec(["id", "-u"], user=0).stdout == "0\n"


def test_unknown_user_is_a_clear_error(box):
    with pytest.raises(ValueError, match="user 'nosuchuser' does not exist in t-lxdsnap-"):
        box.exec(["true"], user="nosuchuser")


def test_stdin_text_and_bytes(box):
    assert box.exec(["cat"], stdin="line one\nline two\n").stdout == "line one\nline two\n"
    assert box.exec(["wc", "-c"], stdin=bytes(range(256)) * 4).stdout.strip() == "1024"
    assert box.exec(["ls", "/tmp"]).stdout == ""  # the stdin file is gone


def test_missing_binary_gives_a_clear_result(box):
    result = box.exec(["no-such-binary", "--flag"])
    assert result.exit_code == 127
    assert "no-such-binary: command not found in t-lxdsnap-" in result.stderr
    with pytest.raises(ExecError, match="exited 127"):
        box.exec(["no-such-binary"], check=True)


def test_binary_and_non_utf8_output_survive(box):
    result = box.exec(["printf", r"\377\000\001abc"])
    assert result.stdout_bytes == b"\xff\x00\x01abc"
    assert result.stdout == "\ufffd\x00\x01abc"


def test_large_output_survives(box):
    result = box.exec("head -c 20000000 /dev/zero | tr '\\0' 'x'; echo; echo done >&2")
    assert len(result.stdout_bytes) == 20_000_001
    assert result.stdout_bytes.count(b"x") == 20_000_000
    assert result.stderr == "done\n"


def test_100_mb_of_output_with_a_raised_cap(box):
    result = box.exec("head -c 100000000 /dev/zero | tr '\\0' 'y'", max_output=100_000_000)
    assert result.exit_code == 0
    assert len(result.stdout_bytes) == 100_000_000 and result.stdout_bytes[:3] == b"yyy"


def test_timeout(box):
    with pytest.raises(ExecTimeout, match=r"sleep 30 in t-lxdsnap-\w+ did not finish within 1 s"):
        box.exec(["sleep", "30"], timeout=1)


def running(box: Container, pattern: str) -> list[str]:
    """Lines of ``ps`` in the container that show ``pattern`` (the ps itself aside)."""
    return [line for line in box.exec(["ps"]).stdout.splitlines() if pattern in line and " ps" not in line]


def test_timeout_kills_the_command_and_its_children(box, lxd_client):
    box.exec("sleep 399 >/dev/null 2>&1 &", check=True)  # another command's daemon: not this timeout's to kill
    with pytest.raises(ExecTimeout, match=r"^sleep 300 in t-lxdsnap-\w+ did not finish within 1 s and was stopped"):
        box.exec(["sleep", "300"], timeout=1)
    with pytest.raises(ExecTimeout, match="did not finish within 1 s and was stopped") as info:
        box.exec("echo started; sleep 301 & sleep 300", timeout=1)
    assert info.value.result.stdout == "started\n"  # the output so far
    assert running(box, "sleep 30") == []
    assert len(running(box, "sleep 399")) == 1
    assert lxdapi.exec_log_names(lxd_client, box.instance_name) == []  # the killed commands' logs went with them


def test_output_over_the_cap_is_an_error_that_says_how_to_raise_it(box, lxd_client):
    message = r"stderr of sh -c .* in t-lxdsnap-\w+ passed the output cap of 1000 bytes\. Raise .*max_output=.*redirect"
    with pytest.raises(errors.ExecOutputTooLarge, match=message) as info:
        box.exec("echo small; head -c 5000 /dev/zero >&2", max_output=1000)
    assert info.value.result.stdout == "small\n" and info.value.result.stderr_bytes == b"\0" * 1000
    assert box.exec("head -c 1000 /dev/zero", max_output=1000).stdout_bytes == b"\0" * 1000  # at the cap: fine
    assert lxdapi.exec_log_names(lxd_client, box.instance_name) == []


def test_runaway_output_is_stopped_while_it_runs(box, lxd_client):
    with pytest.raises(errors.ExecOutputTooLarge, match=r"stdout of yes in t-lxdsnap-\w+ passed the output cap of "
                                                        r"1048576 bytes \(1 MiB\) and was stopped"):
        box.exec(["yes"], max_output=1 << 20, timeout=120)
    assert running(box, "yes") == []
    assert lxdapi.exec_log_names(lxd_client, box.instance_name) == []


def test_the_default_cap_is_the_module_constant(box, monkeypatch):
    assert execution.MAX_OUTPUT == 64 * 1024 * 1024
    monkeypatch.setattr(execution, "MAX_OUTPUT", 100)
    with pytest.raises(errors.ExecOutputTooLarge, match="output cap of 100 bytes"):
        box.exec("head -c 101 /dev/zero")
    with pytest.raises(ValueError, match="max_output must be a positive number of bytes"):
        box.exec(["true"], max_output=0)


def test_stdin_with_a_non_root_user(box):
    result = box.exec(["sh", "-c", 'id -u; cat'], stdin="for nobody\n", user="nobody")
    assert (result.exit_code, result.stdout, result.stderr) == (0, "65534\nfor nobody\n", "")
    assert box.exec(["cat"], stdin=b"uid only", user=1234).stdout == "uid only"
    assert box.exec(["ls", "-A", "/tmp"]).stdout == ""


def test_stdin_leaves_no_file_on_failure_or_timeout(box, lxd_client, make_instance):
    assert box.exec(["sh", "-c", "cat; exit 3"], stdin="x", user="nobody").exit_code == 3
    with pytest.raises(ExecTimeout):
        box.exec(["sleep", "300"], stdin="x", timeout=1)
    assert box.exec(["ls", "-A", "/tmp"]).stdout == ""
    stopped = Container(lxd_client, "stopped", make_instance(running=False))
    with pytest.raises(ExecError, match="not running"):
        stopped.exec(["cat"], stdin="x", user=1234)  # the file is written, then LXD refuses to run the command
    assert lxdapi.set_power(lxd_client, stopped.instance_name, "start") is None
    assert stopped.exec(["ls", "-A", "/tmp"]).stdout == ""


def test_exec_logs_are_cleaned_up(box, lxd_client):
    for _ in range(3):
        box.exec(["true"])
    assert lxdapi.exec_log_names(lxd_client, box.instance_name) == []
    exec_command(lxd_client, box.instance_name, ["echo", "kept"], keep_logs=True)
    kept = lxdapi.exec_log_names(lxd_client, box.instance_name)
    assert kept and all(log.startswith("exec_") for log in kept)  # the check above sees logs when there are
    lxdapi.purge_exec_logs(lxd_client, box.instance_name)
    assert lxdapi.exec_log_names(lxd_client, box.instance_name) == []


def test_files_text_bytes_and_errors(box):
    box.write_text("/root/a.txt", "héllo\n", mode=0o600)
    assert box.read_text("/root/a.txt") == "héllo\n"
    assert box.exec(["stat", "-c", "%a %u", "/root/a.txt"]).stdout == "600 0\n"
    box.write_bytes("/root/b.bin", bytes(range(256)))
    assert box.read_bytes("/root/b.bin") == bytes(range(256))
    assert box.exists("/root") and not box.exists("/root/nope")
    with pytest.raises(FileNotFoundError, match=f"/root/nope does not exist in {box.instance_name}"):
        box.read_text("/root/nope")
    with pytest.raises(OSError, match=f"cannot write /no/such/dir/f in {box.instance_name}"):
        box.write_text("/no/such/dir/f", "x")


def test_exec_rejects_a_non_list_command(box):
    with pytest.raises(TypeError, match="exec takes a non-empty list of strings"):
        box.exec([])
    with pytest.raises(TypeError, match="exec takes a non-empty list of strings"):
        box.exec(["echo", 1])  # type: ignore[list-item]


def test_handle_exposes_status_and_pylxd_instance(box):
    assert box.status == "Running"
    assert box.instance.name == box.instance_name
    assert repr(box) == f"<lxdsnap.Container 'box' instance={box.instance_name!r}>"


def test_exec_in_a_stopped_container_says_so(lxd_client, make_instance):
    box = Container(lxd_client, "box", make_instance(running=False))
    with pytest.raises(ExecError, match=f"LXD refused to run true in {box.instance_name}: .*not running"):
        box.exec(["true"])
