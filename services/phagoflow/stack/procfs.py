"""What the kernel knows about our own processes: process-group members and listening sockets.

One home for every ``/proc`` scan of the local stack:

- :func:`group_members` — the live processes of a process group (each server runs in a session
  of its own, so its group holds it and its helpers, e.g. Triton's Python-backend stubs);
- :func:`listening_sockets` — the TCP addresses a process group listens on, read from
  ``/proc/net/tcp`` and ``/proc/net/tcp6`` and matched to the group's file descriptors.

The second is how a server started on port 0 reports the port the OS gave it: nothing guesses
a free port and hopes it is still free when the server binds it. Linux only (``/proc``).
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["group_members", "listening_sockets"]

_PROC = Path("/proc")
_TCP_LISTEN = "0A"  # st column of /proc/net/tcp


def group_members(pgids: Sequence[int]) -> dict[int, list[tuple[Path, list[str]]]]:
    """Live processes of each process group: ``(/proc/PID, stat fields after "(comm)")``.

    Parameters
    ----------
    pgids : sequence of int
        Process-group ids (a server started with ``start_new_session`` has pgid = its pid).

    Returns
    -------
    dict
        For each pgid, its members; ``fields[0]`` is the state, ``fields[1]`` the parent pid,
        ``fields[11]``/``fields[12]`` user/system CPU time in clock ticks (see ``proc(5)``).
    """
    members: dict[int, list[tuple[Path, list[str]]]] = {g: [] for g in pgids}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            pgrp = int(fields[2])  # state ppid pgrp ...
        except (OSError, IndexError, ValueError):
            continue
        if pgrp in members:
            members[pgrp].append((entry, fields))
    return members


def _decode_address(hex_addr: str) -> str:
    """``/proc/net/tcp[6]`` address (native-endian 32-bit words in hex) → dotted / colon text.

    IPv4-mapped IPv6 addresses (``::ffff:127.0.0.1``) are returned as plain IPv4.
    """
    words = [
        int(hex_addr[i : i + 8], 16).to_bytes(4, sys.byteorder) for i in range(0, len(hex_addr), 8)
    ]
    raw = b"".join(words)
    if len(hex_addr) == 8:
        return socket.inet_ntop(socket.AF_INET, raw[:4])
    if raw[:12] == b"\0" * 10 + b"\xff\xff":
        return socket.inet_ntop(socket.AF_INET, raw[12:])
    return socket.inet_ntop(socket.AF_INET6, raw)


def _listening_inodes() -> dict[str, tuple[str, int]]:
    """Socket inode → ``(address, port)`` of every TCP socket in LISTEN state on this host."""
    out: dict[str, tuple[str, int]] = {}
    for table in ("tcp", "tcp6"):
        try:
            lines = (_PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) < 10 or cols[3] != _TCP_LISTEN:
                continue
            addr, port = cols[1].rsplit(":", 1)
            out[cols[9]] = (_decode_address(addr), int(port, 16))
    return out


def listening_sockets(pgid: int) -> list[tuple[str, int]]:
    """TCP ``(address, port)`` pairs that processes of group ``pgid`` listen on, sorted.

    Parameters
    ----------
    pgid : int
        Process-group id of a server (its pid when started in a session of its own).

    Returns
    -------
    list of (str, int)
        Listening addresses (``"127.0.0.1"``, ``"0.0.0.0"``, ``"::"``...) and TCP ports; empty
        while the server has not bound yet, or when the group is gone.
    """
    listening = _listening_inodes()
    if not listening:
        return []
    found: set[tuple[str, int]] = set()
    for entry, _ in group_members([pgid])[pgid]:
        try:
            fds = os.listdir(entry / "fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(entry / "fd" / fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                hit = listening.get(target[8:-1])
                if hit is not None:
                    found.add(hit)
    return sorted(found)
