"""/proc scans: the listening sockets of a process group, IPv4 and IPv6, and its members."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap

import pytest

from phagoflow.stack.procfs import group_members, listening_sockets

CHILD = textwrap.dedent(
    """
    import socket, sys, time
    socks = []
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        s = socket.socket(family)
        s.bind((host, 0))
        s.listen()
        socks.append(s)
    idle = socket.socket()  # bound, not listening: not reported
    idle.bind(("127.0.0.1", 0))
    print(*(s.getsockname()[1] for s in socks), flush=True)
    time.sleep(60)
    """
)


def test_listening_sockets_of_a_child_group() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this host")
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert child.stdout is not None
        v4, v6 = (int(x) for x in child.stdout.readline().split())
        assert listening_sockets(child.pid) == sorted([("127.0.0.1", v4), ("::1", v6)])
        members = group_members([child.pid])[child.pid]
        assert [int(entry.name) for entry, _ in members] == [child.pid]
    finally:
        child.kill()
        child.wait()
    assert listening_sockets(child.pid) == []  # gone: nothing to report
