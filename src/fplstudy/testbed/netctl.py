"""The Mininet side of the emulated testbed: builds the network, runs one command per host, tears it down.

This file runs under the *system* Python (``/usr/bin/python3``), which is where the Debian package
``mininet`` installs its module (``/usr/lib/python3/dist-packages``); it imports nothing but the standard
library and Mininet, never fplstudy or torch. :mod:`fplstudy.testbed.emulation` starts it as a subprocess with a
JSON spec, and the commands it runs in the hosts' namespaces are the project's own Python (the venv's),
so the two interpreters never share a process. Usage::

    /usr/bin/python3 netctl.py run SPEC.json     # build, run, tear down; prints one JSON line (the outcome)
    /usr/bin/python3 netctl.py sweep TAG         # remove what a killed run of tag TAG left behind
    /usr/bin/python3 netctl.py check             # can a network be built here? one JSON line

The spec::

    {"tag": "fq3a",                 # 2..6 lowercase letters/digits; every name of the run starts with it
     "hosts": [{"name": "n0", "cpu": 0.12, "period_us": 8000, "up_mbit": 9.4, "down_mbit": 10.4,
                "argv": [...], "env": {...}, "log": "/path/n0.log"}, ...],
     "cwd": "/path", "deadline_s": 600, "parent_pid": 1234, "gate": "/path/gate"}

The outcome: ``{"tag", "hosts", "ips", "codes" (each command's exit code), "stopped" (null, "signal" or
"deadline"), "build_s", "wall_s"}``, and on a topology ``link_tx_bytes``: per link, the bytes each end sent
(Ethernet frames, from the interfaces' counters, read before the network is stopped).

With ``gate``, the hosts start unthrottled; once every host has written ``gate/ready-<i>`` (its command
has started and joined the run), the CPU limits are applied and the file ``gate/go`` is written. So the
start-up (imports, rendezvous) runs at full speed and only the emulated work is throttled.

The network, without ``links`` in the spec (the uniform site): one Linux bridge (no controller, no
OpenFlow), every host joined to it by one link shaped with ``tc`` HTB (Mininet's ``TCLink``): ``up_mbit``
on the host's egress, ``down_mbit`` on the bridge's egress towards the host. Host ``i`` has the address
``10.0.0.(i+1)/24`` on its interface ``<host>-eth0``.

With ``links`` (a topology, :func:`fplstudy.testbed.emulation.network_spec`), the spec also gives::

     "routers": ["r0", ...],                                   # relays that run no node (plain hosts)
     "links": [{"ends": ["h0", "r0"], "mbit": [9.4, null],     # ends' egress rates (null: not shaped)
                "addrs": ["10.1.0.1/24", "10.1.0.2/24"]}, ...],
     "routes": {"h0": [["10.0.0.2", "10.1.0.2"], ...], ...}    # per point: destination, next hop

and no bridge is built: every link joins its two ends directly, each end's egress shaped with ``tc`` HTB
to its rate; every host and router forwards IPv4 (``ip_forward``, no reverse-path filter) along the static
routes given, which are the model's paths. Host ``i``'s own address ``10.0.0.(i+1)/32`` is on an
interface of its own, ``<host>-id`` (one end of a veth pair inside its namespace: this kernel has no
``dummy`` interfaces), so that it is the same on every path; gloo binds to that interface, and the
routes name it as the source. No delay and no loss are emulated (``netem`` is not used: it is not available
on every kernel). Hosts are ``CPULimitedHost``: ``cpu`` is the share of the *whole machine* (Mininet's
convention; a share of one core is ``cpu * cores``) enforced by CFS bandwidth control with period
``period_us``. Every host and router has its own network namespace.

CFS bandwidth control alone does not slow short bursts: a host that waited (for a message) starts each
period with a fresh quota of at least 1 ms and runs a chunk shorter than that at full speed. So each
host also runs a *filler* (``fill_idle``, default on): a busy loop at the lowest priority there is
(``SCHED_IDLE``) in the host's cgroup, which spends the quota whenever the node has nothing to run and
yields it at once when the node does. The host then consumes its share in every period, and a chunk of
any length runs at ``share`` of a core on average, as a slower CPU would.

Clean-up: the network is stopped (Mininet's ``net.stop()``: links, bridge, host shells, cgroups) when the
commands end, when this process gets SIGINT/SIGTERM, or when its parent dies (its stdin closes). A run
that could not clean up (this process killed with SIGKILL) is swept by ``sweep TAG``: the processes in
the run's namespaces and cgroups, its interfaces and its cgroups, found by their names. Nothing is
removed by a broad name: ``mn -c`` is never called (it kills every Mininet and every ``ping`` of the
machine).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

TAG_RE = re.compile(r"^[a-z][a-z0-9]{1,5}$")
CGROUP_ROOT = "/sys/fs/cgroup"
STATE_DIR = "/run/fplstudy-testbed"  # one file per live run: tag -> controller pid (for sweeps)


class _Stop(Exception):
    """A signal, or the parent's death, asked the run to stop."""


def _names(tag: str, n_hosts: int) -> tuple[list[str], str]:
    return [f"{tag}h{i}" for i in range(n_hosts)], f"{tag}s0"


def _ours(tag: str, name: str) -> bool:
    """Whether ``name`` is a host, router or the bridge of run ``tag`` (or an interface of one)."""
    return re.fullmatch(rf"{tag}(h\d+|r\d+|s0)(-.*)?", name) is not None


TOOLS = ("mnexec", "tc", "brctl", "cgcreate", "ip")  # the programs Mininet runs by name, found through PATH
SYSTEM_DIRS = ("/usr/sbin", "/sbin")  # where tc, ip and brctl are installed, off the PATH of `env -i` and some sudo


def _on_path(tool: str, path: str) -> str | None:
    """The folder of ``path`` (a PATH value) that holds the program ``tool``, or None."""
    return next((d for d in path.split(os.pathsep) if d and os.access(os.path.join(d, tool), os.X_OK)), None)


def _check() -> dict:
    """What a network needs here: root, the mininet module, mnexec, tc, brctl, cgcreate and ip on PATH (Mininet
    runs them by name: one installed off PATH fails there as an empty answer), the cpu cgroup controller.

    Returns:
        ``{"ok", "missing", "off_path", "cores"}``: ``off_path`` maps a tool that is installed in a folder of
        :data:`SYSTEM_DIRS` but not on PATH to that folder (it is in ``missing`` too).
    """
    missing, off_path = [], {}
    if os.geteuid() != 0:
        missing.append("root")
    try:
        import mininet.net  # noqa: F401
    except ImportError:
        missing.append("the mininet module")
    path = os.environ.get("PATH", os.defpath)
    for tool in TOOLS:
        if _on_path(tool, path) is None:
            missing.append(tool)
            found = _on_path(tool, os.pathsep.join(SYSTEM_DIRS))
            if found is not None:
                off_path[tool] = found
    if not os.path.isfile(os.path.join(CGROUP_ROOT, "cpu", "cpu.cfs_quota_us")):
        missing.append("the cgroup v1 cpu controller (cpu.cfs_quota_us)")
    return {"ok": not missing, "missing": missing, "off_path": off_path, "cores": os.cpu_count()}


def sweep(tag: str) -> dict:
    """Remove what a run of ``tag`` left: processes in its hosts' cgroups and shells, interfaces, cgroups."""
    if not TAG_RE.match(tag):
        raise SystemExit(f"bad tag {tag!r}")
    killed, links, groups = [], [], []
    prefix = tag + "h"
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        # the hosts' and routers' shells are "bash ... mininet:<host>"; the bridge's shell "... mininet:<tag>s0"
        if any(a.decode(errors="replace").startswith("mininet:") and _ours(tag, a.decode(errors="replace")[9:])
               for a in argv):
            killed.append(int(pid))
    for sub in ("cpu", "cpuacct", "cpuset"):
        base = os.path.join(CGROUP_ROOT, sub)
        for name in (os.listdir(base) if os.path.isdir(base) else []):
            if re.fullmatch(rf"{prefix}\d+", name):
                try:
                    with open(os.path.join(base, name, "tasks")) as f:
                        killed += [int(p) for p in f.read().split()]
                except OSError:
                    pass
    for pid in set(killed):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    for m in re.finditer(r"^\d+: ([^:@]+)[:@]", out, re.M):
        name = m.group(1)
        if _ours(tag, name):
            subprocess.run(["ip", "link", "del", name], capture_output=True)
            links.append(name)
    deadline = time.time() + 5
    for sub in ("cpu", "cpuacct", "cpuset"):
        base = os.path.join(CGROUP_ROOT, sub)
        for name in (os.listdir(base) if os.path.isdir(base) else []):
            if re.fullmatch(rf"{prefix}\d+", name):
                while True:
                    try:
                        os.rmdir(os.path.join(base, name))
                        groups.append(f"{sub}/{name}")
                        break
                    except OSError:
                        if time.time() > deadline:
                            break
                        time.sleep(0.1)
    try:
        os.unlink(os.path.join(STATE_DIR, tag))
    except OSError:
        pass
    return {"killed": sorted(set(killed)), "links": links, "cgroups": groups}


def leftovers(tag: str) -> dict:
    """What of run ``tag`` exists now (empty lists: nothing)."""
    prefix = tag + "h"
    procs = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    argv = [a.decode(errors="replace") for a in f.read().split(b"\0")]
            except OSError:
                continue
            if any(a.startswith("mininet:") and _ours(tag, a[9:]) for a in argv):
                procs.append(int(pid))
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    links = [m.group(1) for m in re.finditer(r"^\d+: ([^:@]+)[:@]", out, re.M) if _ours(tag, m.group(1))]
    groups = [f"{sub}/{n}" for sub in ("cpu", "cpuacct", "cpuset")
              for n in (os.listdir(os.path.join(CGROUP_ROOT, sub)) if os.path.isdir(os.path.join(CGROUP_ROOT, sub)) else [])
              if re.fullmatch(rf"{prefix}\d+", n)]
    return {"processes": procs, "links": links, "cgroups": groups}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def _sh(node, command: str) -> None:
    """Run ``command`` once in ``node``'s namespace; raise with its output when it fails."""
    out, _, code = node.cmd(f"{command} 2>&1; echo \"rc=$?\"").rstrip().rpartition("rc=")
    if code.strip() != "0":
        raise RuntimeError(f"{node.name}: {command}: {out.strip()}")


def _tx_bytes(intf) -> int | None:
    out = intf.node.cmd(f"cat /sys/class/net/{intf.name}/statistics/tx_bytes").strip()
    return int(out) if out.isdigit() else None


def _route(net, tag: str, names: list, made: list, routes: dict) -> None:
    """Address every link's ends, give each host its own address on ``<host>-id``, turn on forwarding and
    install the static routes of a topology spec (module docstring)."""
    for node in net.hosts:
        _sh(node, "sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0")
    for link, entry in made:
        for intf, addr in zip((link.intf1, link.intf2), entry["addrs"]):
            _sh(intf.node, f"ip addr flush dev {intf.name} && ip addr add {addr} dev {intf.name} && "
                           f"ip link set {intf.name} up && sysctl -qw net.ipv4.conf.{intf.name}.rp_filter=0")
    for i, name in enumerate(names):
        host = net.get(name)
        _sh(host, f"ip link add {name}-id type veth peer name {name}-ip && ip addr add 10.0.0.{i + 1}/32 dev "
                  f"{name}-id && ip link set {name}-id up && ip link set {name}-ip up")
    for local, table in routes.items():
        node = net.get(tag + local)
        src = f" src 10.0.0.{int(local[1:]) + 1}" if local.startswith("h") else ""
        for dst, via in table:
            _sh(node, f"ip route add {dst}/32 via {via}{src}")


def run_network(spec: dict) -> dict:
    """Build the network of ``spec``, run every host's command, stop the network (see the module docstring)."""
    from mininet.link import TCLink
    from mininet.log import setLogLevel
    from mininet.net import Mininet
    from mininet.node import CPULimitedHost, Host
    from mininet.nodelib import LinuxBridge

    setLogLevel("error")
    tag = spec["tag"]
    if not TAG_RE.match(tag):
        raise SystemExit(f"bad tag {tag!r}")
    hosts_spec = spec["hosts"]
    names, switch = _names(tag, len(hosts_spec))
    os.makedirs(STATE_DIR, exist_ok=True)
    with open(os.path.join(STATE_DIR, tag), "w") as f:
        f.write(str(os.getpid()))

    def stop(*_):
        raise _Stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, stop)

    parent = int(spec.get("parent_pid", os.getppid()))

    def watch_parent() -> None:  # the run ends with the process that asked for it (even after a kill -9)
        while True:
            try:
                os.kill(parent, 0)
            except ProcessLookupError:
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.25)

    threading.Thread(target=watch_parent, daemon=True).start()

    net = Mininet(topo=None, switch=LinuxBridge, controller=None, link=TCLink, host=CPULimitedHost,
                  build=False, autoSetMacs=True, waitConnected=False)
    procs: list[subprocess.Popen] = []
    fillers: list[subprocess.Popen] = []
    logs = []
    outcome: dict = {"tag": tag, "hosts": names, "ips": [], "codes": [], "stopped": None}
    orphaned = False
    t0 = time.time()
    topology = spec.get("links") is not None
    made: list = []  # (link, its spec entry) on a topology
    try:
        sw = None if topology else net.addSwitch(switch)
        for i, (name, h) in enumerate(zip(names, hosts_spec)):
            cpu = -1 if spec.get("gate") else h["cpu"]  # -1: unlimited until the gate opens
            host = net.addHost(name, ip=None if topology else f"10.0.0.{i + 1}/24", cpu=cpu,
                               period_us=int(h["period_us"]))
            if not topology:
                net.addLink(host, sw, cls=TCLink, params1={"bw": h["up_mbit"]}, params2={"bw": h["down_mbit"]})
        if topology:
            for r in spec.get("routers", []):
                net.addHost(tag + r, cls=Host, ip=None)
            for entry in spec["links"]:
                a, b = (net.get(tag + end) for end in entry["ends"])
                shaped = [{"bw": m} if m else {} for m in entry["mbit"]]
                made.append((net.addLink(a, b, cls=TCLink, params1=shaped[0], params2=shaped[1]), entry))
        net.build()
        net.start()
        if topology:
            _route(net, tag, names, made, spec["routes"])
            outcome["ips"] = [f"10.0.0.{i + 1}" for i in range(len(names))]
        else:
            outcome["ips"] = [net.get(name).IP() for name in names]
        outcome["build_s"] = time.time() - t0
        for name, h in zip(names, hosts_spec):
            log = open(h["log"], "w") if h.get("log") else subprocess.DEVNULL
            logs.append(log)
            env = {**os.environ, **h.get("env", {})}
            procs.append(net.get(name).popen(h["argv"], cwd=spec.get("cwd"), env=env, stdout=log,
                                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))  # mnexec -d: its own session
        deadline = time.time() + float(spec.get("deadline_s", 3600))
        gate = spec.get("gate")
        while gate and any(p.poll() is None for p in procs) and time.time() < deadline:
            if all(os.path.exists(os.path.join(gate, f"ready-{i}")) for i in range(len(names))):
                for name, h in zip(names, hosts_spec):
                    net.get(name).setCPUFrac(h["cpu"], sched="cfs")
                    if spec.get("fill_idle", True):  # see the module docstring: the quota is spent evenly
                        fillers.append(net.get(name).popen(["chrt", "--idle", "0", "sh", "-c", "while :; do :; done"],
                                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                                           stdin=subprocess.DEVNULL))
                outcome["throttled_at"] = time.time() - t0
                open(os.path.join(gate, "go"), "w").close()
                break
            if any(p.poll() is not None for p in procs):
                break
            time.sleep(0.02)
        while any(p.poll() is None for p in procs):
            if time.time() > deadline:
                outcome["stopped"] = "deadline"
                break
            time.sleep(0.05)
    except _Stop:
        outcome["stopped"] = "signal"
        orphaned = True
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for p in procs + fillers:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)  # the command and anything it started
                except ProcessLookupError:
                    pass
        for p in procs + fillers:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass
        outcome["codes"] = [p.returncode for p in procs]  # the fillers were killed: no code of theirs counts
        if made:  # bytes each end of each link sent (frames, headers included), before the links go
            outcome["link_tx_bytes"] = [[_tx_bytes(intf) for intf in (link.intf1, link.intf2)] for link, _ in made]
        for log in logs:
            if log is not subprocess.DEVNULL:
                log.close()
        try:
            net.stop()
        finally:
            sweep(tag)  # whatever net.stop() left (it is idempotent), and the state file
            scratch = spec.get("scratch")
            if orphaned and scratch and not _alive(parent):  # nobody is left to read or remove it
                subprocess.run(["rm", "-rf", "--one-file-system", scratch], capture_output=True)
        outcome["wall_s"] = time.time() - t0
    return outcome


def main(argv: list[str]) -> int:
    if len(argv) >= 1 and argv[0] == "check":
        print(json.dumps(_check()))
        return 0
    if len(argv) == 2 and argv[0] == "sweep":
        print(json.dumps(sweep(argv[1])))
        return 0
    if len(argv) == 2 and argv[0] == "leftovers":
        print(json.dumps(leftovers(argv[1])))
        return 0
    if len(argv) == 2 and argv[0] == "run":
        with open(argv[1]) as f:
            spec = json.load(f)
        print(json.dumps(run_network(spec)), flush=True)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
