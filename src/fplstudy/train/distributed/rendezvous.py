"""The rendezvous of the distributed backend: the store (on one address, never every interface), gloo's
interface, and the wait for every rank within ``distributed_timeout_s``."""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import os
import socket
import struct
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch.distributed as dist

from fplstudy.train.distributed.transport import (
    TIMEOUT_KEY,
    DistributedError,
    LaunchError,
    short,
)

# --------------------------------------------------------------------------- the rendezvous

def interface_of(ip: str) -> str | None:
    """Name of the network interface that holds the local address ``ip`` (None when none does)."""
    addr = ipaddress.ip_address(ip)
    if addr.version == 6:  # /proc/net/if_inet6: "<address, 32 hex digits> <index> <prefix> <scope> <flags> <name>"
        try:
            lines = Path("/proc/net/if_inet6").read_text().splitlines()
        except OSError:  # pragma: no cover - no IPv6
            return None
        return next((f[5] for f in map(str.split, lines) if len(f) >= 6 and int(f[0], 16) == int(addr)), None)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _, name in socket.if_nameindex():
            try:  # SIOCGIFADDR: the interface's IPv4 address, bytes 20..24 of the answer (struct ifreq)
                got = fcntl.ioctl(probe.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))
            except OSError:
                continue
            if socket.inet_ntoa(got[20:24]) == str(addr):
                return name
    return None


def route_source(ip: str) -> str:
    """The local address this host reaches ``ip`` from (the kernel's route lookup; nothing is sent)."""
    family = socket.AF_INET6 if ipaddress.ip_address(ip).version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect((ip, 9))
        return probe.getsockname()[0]


def resolve_address(host: str, var: str = "MASTER_ADDR") -> str:
    """The IP address of ``host`` (a name or an address).

    Raises:
        LaunchError: it cannot be resolved.
    """
    try:
        return socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][4][0]
    except (socket.gaierror, UnicodeError, ValueError):
        raise LaunchError(var, host, "cannot be resolved; give rank 0's IP address") from None


def store_server(ip: str, port: int, timeout_s: float) -> dist.TCPStore:
    """The rendezvous store, listening on ``ip`` only (``port`` 0: a free port the OS picks, no race).

    The socket is bound here and handed to the store, whose own listener would take every interface.

    Raises:
        LaunchError: ``ip`` is a wildcard or not an address of this host, or ``port`` is taken.
    """
    addr = ipaddress.ip_address(ip)
    if addr.is_unspecified:
        raise LaunchError("MASTER_ADDR", ip, "a wildcard address would open the rendezvous store on every "
                          "interface; give rank 0's own address on the network the ranks share")
    sock = socket.socket(socket.AF_INET6 if addr.version == 6 else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port in TIME_WAIT, never a live listener
        sock.bind((ip, port))
        sock.listen(socket.SOMAXCONN)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise LaunchError("MASTER_PORT", port, f"{ip}:{port} is already in use by another program; "
                              "give every rank the same free MASTER_PORT") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise LaunchError("MASTER_ADDR", ip, "is not an address of this host; rank 0 hosts the rendezvous, so "
                              "MASTER_ADDR must be its own address") from None
        raise LaunchError("MASTER_PORT", port, f"cannot listen on {ip}:{port} ({exc.strerror}); "
                          "choose a free port >= 1024") from None
    bound = sock.getsockname()[1]
    return dist.TCPStore(ip, bound, is_master=True, wait_for_workers=False, timeout=timedelta(seconds=timeout_s),
                         master_listen_fd=sock.detach(), use_libuv=True)  # the store owns the socket now


def _wait_for_listener(ip: str, port: int, deadline: float) -> bool:
    """Connect (and close) until something listens at ``ip:port`` or the deadline passes."""
    while time.monotonic() < deadline:
        try:
            socket.create_connection((ip, port), timeout=max(0.05, min(1.0, deadline - time.monotonic()))).close()
            return True
        except OSError:
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
    return False


def rendezvous(rank: int, world: int, ip: str, port: int, timeout_s: float,
               store: dist.TCPStore | None = None) -> dist.TCPStore:
    """Join (``store`` None) or host the rendezvous at ``ip:port`` and start the default gloo process group.

    Everything happens within ``timeout_s``: a store client whose peer never answers (another program
    holds the port) or a world whose ranks never all arrive would otherwise block for good. The wait
    runs in a daemon thread; when it is over time the thread is abandoned (it holds no lock of ours)
    and the caller gets one :class:`DistributedError`.

    Returns:
        The store (keep it as long as the process group).

    Raises:
        DistributedError: the rendezvous did not complete in time, saying what was missing.
    """
    deadline = time.monotonic() + timeout_s
    # torch's own waits end later than ours: the caller reports first, and no C++ warning precedes the report
    lenient = timedelta(seconds=2 * timeout_s + 10)
    stage = ["connecting"]
    box: dict[str, Any] = {}

    def join() -> None:
        try:
            s = store
            if s is None:
                if not _wait_for_listener(ip, port, deadline):
                    return
                stage[0] = "handshake"
                s = dist.TCPStore(ip, port, is_master=False, timeout=lenient)
            stage[0] = "joining"
            dist.init_process_group("gloo", store=s, rank=rank, world_size=world, timeout=lenient)
            dist.set_timeout(timedelta(seconds=timeout_s))  # every collective from now on
            box["store"] = s
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=join, daemon=True, name="fplstudy-rendezvous")
    thread.start()
    thread.join(max(0.0, deadline - time.monotonic()) + 0.5)
    if "store" in box:
        return box["store"]
    why = {"connecting": f"nothing listens at {ip}:{port} (MASTER_ADDR:MASTER_PORT): start rank 0, or check "
                         "MASTER_ADDR, MASTER_PORT and the firewall",
           "handshake": f"{ip}:{port} accepted the connection but does not answer as a rendezvous store (another "
                        "program holds MASTER_PORT there?): give every rank the same free MASTER_PORT",
           "joining": f"not every one of the {world} ranks joined at {ip}:{port}: start all of them with the same "
                      "MASTER_ADDR, MASTER_PORT and WORLD_SIZE"}[stage[0]]
    if "error" in box:
        why += f" ({short(box['error'])})"
    raise DistributedError(f"rank {rank}: the rendezvous did not complete within {timeout_s:g} s: {why}; "
                           f"raise the config key {TIMEOUT_KEY} if the ranks need longer to start")


class GlooInterface:
    """Context: gloo's sockets on interface ``name`` (``GLOO_SOCKET_IFNAME``) unless the user set one."""

    def __init__(self, name: str | None):
        self.name, self.old = name, None

    def __enter__(self):
        self.old = os.environ.get("GLOO_SOCKET_IFNAME")
        if self.old is None and self.name:
            os.environ["GLOO_SOCKET_IFNAME"] = self.name
        return self

    def __exit__(self, *exc):
        if self.old is None:
            os.environ.pop("GLOO_SOCKET_IFNAME", None)
