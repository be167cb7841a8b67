"""testcontainers' wait strategies on a real LXD container, through lxdsnap's Container (a WaitStrategyTarget):
each member of the protocol answers for the real instance, and real strategies pass when the container is ready
and time out (or see it exit) when it is not. The protocol itself is checked member by member, without a daemon,
in tests/unit/test_handle.py."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import pylxd
import pytest
from testcontainers.core.wait_strategies import (
    ExecWaitStrategy,
    HttpWaitStrategy,
    LogMessageWaitStrategy,
    PortWaitStrategy,
)
from testcontainers.core.waiting_utils import WaitStrategy, WaitStrategyTarget

from pytest_lxdsnap.handle import Container
from pytest_lxdsnap.lxd import lxdapi, ports

from .helpers import protocol_members

MEMBERS = protocol_members(WaitStrategyTarget)

SLACK = 3.0  # seconds a strategy may overrun its timeout: its last poll, and LXD's answer to it


@pytest.fixture
def box(lxd_client: pylxd.Client, make_instance: Callable[..., str]) -> Container:
    name = make_instance()
    return Container(lxd_client, "box", name)


def timed(strategy: WaitStrategy, box: Container) -> float:
    started = time.monotonic()
    strategy.wait_until_ready(box)
    return time.monotonic() - started


def times_out(strategy: WaitStrategy, box: Container, timeout: float, error: type[Exception] = TimeoutError) -> str:
    """Run a strategy that must fail: it raises ``error`` after ``timeout`` seconds, not before, not much later."""
    started = time.monotonic()
    with pytest.raises(error) as raised:
        strategy.with_startup_timeout(timeout).wait_until_ready(box)
    took = time.monotonic() - started
    assert timeout <= took < timeout + SLACK, f"{type(strategy).__name__} gave up after {took:.1f} s, not {timeout} s"
    return str(raised.value)


def test_every_member_of_the_protocol_answers_for_the_real_instance(box, lxd_client):
    assert set(MEMBERS) == {"get_container_host_ip", "get_exposed_port", "get_wrapped_container", "get_logs",
                            "reload", "status"}, "testcontainers changed the protocol: check each new member here"
    assert box.status == "Running"
    assert box.get_container_host_ip() == "127.0.0.1"
    port = box.get_exposed_port(8080)
    assert isinstance(port, int) and box.get_exposed_port(8080) == port  # one proxy device per port
    device = lxdapi.get_instance(lxd_client, box.instance_name)["devices"]["lxdsnap-port-8080"]
    assert device["listen"] == f"tcp:127.0.0.1:{port}" and device["connect"] == "tcp:127.0.0.1:8080"
    stdout, stderr = box.get_logs()
    assert isinstance(stdout, bytes) and stderr == b""
    wrapped = box.get_wrapped_container()
    assert wrapped.status == "running" and wrapped.attrs["State"]["Status"] == "running"
    assert box.reload() is None
    lxdapi.set_power(lxd_client, box.instance_name, "stop")
    assert box.status == "Stopped"
    wrapped.reload()
    assert wrapped.status == "exited"


def test_exec_waits_until_the_command_succeeds_and_times_out_when_it_never_does(box):
    box.exec("(sleep 1; touch /tmp/ready) >/dev/null 2>&1 &", check=True)
    took = timed(ExecWaitStrategy(["test", "-e", "/tmp/ready"]).with_startup_timeout(20).with_poll_interval(0.1), box)
    assert 0.5 < took < 20, f"ready after {took:.1f} s: the file appears after about 1 s"
    message = times_out(ExecWaitStrategy(["test", "-e", "/tmp/never"]).with_poll_interval(0.2), box, 2)
    assert "last exit code: 1" in message and "Command: test -e /tmp/never" in message


def test_log_message_waits_for_the_console_and_sees_the_container_exit(box, lxd_client):
    box.exec("(sleep 1; echo lxdsnap-wait-target-ready > /dev/console) >/dev/null 2>&1 &", check=True)
    took = timed(LogMessageWaitStrategy("lxdsnap-wait-target-ready").with_startup_timeout(20)
                 .with_poll_interval(0.1), box)
    assert 0.5 < took < 20, f"ready after {took:.1f} s: the message comes after about 1 s"
    message = times_out(LogMessageWaitStrategy("never printed").with_poll_interval(0.2), box, 2)
    assert "never printed" in message and "Container status: running" in message
    lxdapi.set_power(lxd_client, box.instance_name, "stop")
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"Container exited \(status: exited"):
        LogMessageWaitStrategy("never printed").with_startup_timeout(20).wait_until_ready(box)
    assert time.monotonic() - started < SLACK  # at once: a stopped container never prints it


@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="get_logs() hands out only what the console printed since its last call: LXD's console "
                          "log endpoint returns new output once; docker's logs() returns all of it every time")
def test_the_console_log_is_there_for_every_reader(box):
    box.exec("echo lxdsnap-printed-once > /dev/console", check=True)
    deadline = time.monotonic() + 10
    while b"lxdsnap-printed-once" not in box.get_logs()[0]:
        assert time.monotonic() < deadline, "the console never showed the line"
        time.sleep(0.1)
    assert b"lxdsnap-printed-once" in box.get_logs()[0], "a second reader (the strategy after a readiness check, " \
        "LogMessageWaitStrategy(times=2), testcontainers' error message) no longer sees it"


def test_http_waits_for_a_service_and_times_out_without_one(box):
    box.exec("mkdir -p /www && echo hello > /www/index.html", check=True)
    box.exec("(sleep 1; httpd -p 127.0.0.1:8080 -h /www) >/dev/null 2>&1 &", check=True)
    took = timed(HttpWaitStrategy(8080).for_status_code(200).with_startup_timeout(20).with_poll_interval(0.1), box)
    assert 0.5 < took < 20, f"ready after {took:.1f} s: the service starts after about 1 s"
    times_out(HttpWaitStrategy(8081).for_status_code(200).with_poll_interval(0.2), box, 2)


@pytest.mark.xfail(strict=True, raises=pytest.fail.Exception,
                   reason="get_exposed_port() is an LXD proxy device listening on the host: it accepts every "
                          "connection itself, before it tries the container's port, so PortWaitStrategy passes at "
                          "once whether or not anything listens in the container")
def test_port_waits_for_a_listener_in_the_container(box):
    with pytest.raises(TimeoutError):
        PortWaitStrategy(9999).with_startup_timeout(2).with_poll_interval(0.2).wait_until_ready(box)
    box.exec("(sleep 1; httpd -p 127.0.0.1:9999 -h /tmp) >/dev/null 2>&1 &", check=True)
    took = timed(PortWaitStrategy(9999).with_startup_timeout(20).with_poll_interval(0.1), box)
    assert 0.5 < took < 20
    with socket.create_connection((ports.HOST, box.get_exposed_port(9999)), timeout=5) as conn:
        conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert conn.recv(12).startswith(b"HTTP/1.")
