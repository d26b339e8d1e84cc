"""The bridge's media relay under load: the edge's own Python relay against rtpengine (issue 17).

    .venv/bin/python bench/relay.py [--n 50,100,250] [--repeat 3] [--seconds 8] [--warmup 2]

Prints one JSON object. For each N, N bridged calls relay G.711 μ-law both ways, 50 packets a
second per direction (2N streams), through

- ``own``: the edge's relay as the operator bridge runs it — ``telephony.bridge.Bridge`` over
  two ``RtpSession`` legs per call, recording the stereo WAV as production does — in a child
  process of its own (``--own-child``), so its CPU is its alone;
- ``rtpengine``: Debian's rtpengine (userspace forwarding, no kernel module) set up per call
  by ``offer``/``answer`` over ng (``telephony.rtpengine.relay_bridge``); no recording;
- ``rtpengine_tap``: the same, plus what the edge would still do in Python: a child process
  (``--tap-child``) subscribes to both sides of every call (``MediaTap``: rtpengine sends it
  a copy) and records the stereo WAV — the media recording and live ASR need. Its CPU is
  counted with rtpengine's (``cpu_pct_by_process`` splits them), ``tap_loss`` is what the
  taps missed.

The load: one forked sender process paces every stream on an absolute 20 ms schedule (streams
spread over the 20 ms), each payload carrying its stream, its index and its send time; this
process reads every leg's socket (epoll) and matches what arrives. The own relay decodes and
re-encodes, re-chunks and pads with silence: the stamp is in bytes μ-law keeps exactly, and a
packet without one (silence the relay sent) is counted apart, not as audio.

Per relay, N and run, over the measured window (after ``--warmup``): ``loss`` (stamped
packets that never arrived, of those sent), ``delay_p50_ms``/``delay_p95_ms`` (send → arrival
through the relay, loopback: the relay's added delay), ``jitter_p95_ms`` (arrival delay above
each stream's own minimum: what a jitter buffer must absorb), ``cpu_pct`` (the relay
process's user+system time from /proc, percent of one core). ``summary`` has the median and
worst of the runs (worst: the highest) and ``ratio_to_own`` the medians' ratios. The
sender's lateness p95 and both load processes' CPU are reported: a late sender is a loaded
machine, not a slow relay — such a run says ``generator_behind`` (p95 over 20 ms) and the
summary counts them (``runs_generator_behind``).
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import os
import random
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._relay_children import own_child, tap_child
from telephony import codecs
from telephony.rtp_packet import HEADER
from telephony.rtpengine import Daemon, audio_sdp, media_address, relay_bridge

HOST = "127.0.0.1"
PACKET_S = 0.02
DRAIN_S = 1.0  # what may still be in flight after the last packet was sent
MAX_SENDER_BEHIND_S = 30.0  # a sender later than this leaves its last packets unread
GENERATOR_LATE_MS = 20.0  # sender lateness p95 above one packet interval: a loaded machine
RELAYS = ("own", "rtpengine", "rtpengine_tap")
# The stamp: stream (4), index (6), send time in µs since the run's base (8) as hex digits,
# each written as a μ-law byte 0x20-0x2F (decoded and re-encoded to itself); the rest of the
# 160 bytes a steady mid-level tone byte.
_STAMP = 18
_TO_WIRE = bytes.maketrans(b"0123456789abcdef", bytes(range(0x20, 0x30)))
_FROM_WIRE = bytes(
    b"0123456789abcdef"[b - 0x20] if 0x20 <= b < 0x30 else ord("x") for b in range(256)
)
_FILL = b"\x55" * (160 - _STAMP)
CLK_TCK = os.sysconf("SC_CLK_TCK")


def stamp(stream: int, index: int, send_us: int) -> bytes:
    digits = b"%04x%06x%08x" % (stream & 0xFFFF, index & 0xFFFFFF, send_us & 0xFFFFFFFF)
    return digits.translate(_TO_WIRE) + _FILL


def read_stamp(payload: bytes) -> tuple[int, int, int] | None:
    """(stream, index, send µs) of a stamped payload, None for anything else (silence)."""
    digits = payload[:_STAMP].translate(_FROM_WIRE)
    if len(digits) < _STAMP or b"x" in digits:
        return None
    return int(digits[:4], 16), int(digits[4:10], 16), int(digits[10:], 16)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of process ``pid`` (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


# --------------------------------------------------------------------------- the relays


@dataclass
class Legs:
    """The calls' peer sockets: call k is ``socks[2k]`` (caller) and ``socks[2k+1]`` (agent);
    ``targets[s]``: where socket s sends (the relay's port for that leg)."""

    socks: list[socket.socket]
    targets: list[tuple[str, int]] = field(default_factory=list)

    @classmethod
    def make(cls, calls: int) -> Legs:
        socks = []
        for _ in range(2 * calls):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            sock.bind((HOST, 0))
            sock.setblocking(False)
            socks.append(sock)
        return cls(socks)

    def ports(self) -> list[int]:
        return [s.getsockname()[1] for s in self.socks]

    def close(self) -> None:
        for sock in self.socks:
            sock.close()


@dataclass
class Relay:
    """The processes doing the relay side's work (their CPU is measured), and figures they
    report when they end."""

    pids: dict[str, int]
    after: dict[str, Any] = field(default_factory=dict)


class _Child:
    """A child process of this program (``--own-child``, ``--tap-child``): a JSON line in,
    a JSON line back when ready, stdin closed to end it, a JSON line of its figures last."""

    def __init__(self, flag: str, workdir: Path, request: Any) -> None:
        self.log = workdir / f"{flag.strip('-')}.log"
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), flag, str(workdir)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                cwd=ROOT,
            )
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(request).encode() + b"\n")
        self.process.stdin.flush()

    def ready(self) -> Any:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.end()
            tail = self.log.read_text(errors="replace").strip().splitlines()[-3:]
            raise RuntimeError("a bench child did not start: " + " | ".join(tail))
        return json.loads(line)

    def end(self) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        try:
            self.process.stdin.close()
        except OSError:
            pass
        try:
            last = self.process.stdout.read()
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return {}
        try:
            figures: dict[str, Any] = json.loads(last) if last.strip() else {}
        except ValueError:
            return {}
        return figures


@contextmanager
def own_relay(legs: Legs, workdir: Path) -> Iterator[Relay]:
    """The edge's relay in a child process, once every bridge runs."""
    child = _Child("--own-child", workdir, legs.ports())
    relay = Relay({"edge": child.process.pid})
    try:
        legs.targets = [(HOST, port) for port in child.ready()]
        yield relay
    finally:
        relay.after.update(child.end())


@contextmanager
def rtpengine_relay(legs: Legs, workdir: Path, *, tap: bool = False) -> Iterator[Relay]:
    """One rtpengine per run: each call set up by offer (caller) and answer (agent); with
    ``tap``, an edge child subscribes to both sides of every call and records them."""
    calls = len(legs.socks) // 2
    # rtpengine's ports: 8 a call (caller, agent, two taps; RTP and RTCP each) with room for
    # ports held by others, below the OS's ephemeral ports (32768+: the legs', the taps')
    # where that fits — a port taken in its window fails an offer or a subscription.
    span = 12 * calls + 200
    low = random.randrange(20_000, max(20_002, 32_768 - span), 2)
    ng_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ng_sock.bind((HOST, 0))
    ng_port = ng_sock.getsockname()[1]
    ng_sock.close()
    daemon = Daemon(
        ng_port=ng_port,
        port_min=low,
        port_max=low + span,
        log_path=workdir / "rtpengine.log",
        extra_args=["--log-level=4"],
    )
    ng = daemon.start()
    child: _Child | None = None
    relay = Relay({"rtpengine": daemon.pid})
    try:
        ports = legs.ports()
        targets: list[tuple[str, int]] = []
        for k in range(calls):
            relayed = relay_bridge(
                ng,
                call_id=f"bench-{k}",
                caller_sdp=audio_sdp(HOST, ports[2 * k]),
                agent_sdp=audio_sdp(HOST, ports[2 * k + 1]),
            )
            targets += [media_address(relayed.to_caller), media_address(relayed.to_agent)]
        legs.targets = targets
        if tap:
            child = _Child("--tap-child", workdir, {"ng": [HOST, ng_port], "calls": calls})
            relay.pids["edge_tap"] = child.process.pid
            child.ready()
        yield relay
    finally:
        if child is not None:
            relay.after.update(child.end())
        daemon.stop()


RelayStarter = Callable[[Legs, Path], AbstractContextManager[Relay]]
RELAY_STARTERS: dict[str, RelayStarter] = {
    "own": own_relay,
    "rtpengine": rtpengine_relay,
    "rtpengine_tap": functools.partial(rtpengine_relay, tap=True),
}


# --------------------------------------------------------------------------- the load


def _sender(legs: Legs, base_ns: int, start_at: float, count: int, report: Any) -> None:
    """Forked: send ``count`` packets on every stream, stream s at ``start_at + i·20 ms +
    s·20 ms/streams``, in 1 ms slots; report the lateness p95 (ms) and our CPU."""
    streams = len(legs.socks)
    slots = 20
    by_slot: list[list[int]] = [[] for _ in range(slots)]
    for s in range(streams):
        by_slot[s * slots // streams].append(s)
    header = HEADER
    late: list[float] = []
    cpu0 = time.process_time()
    for i in range(count):
        for slot, members in enumerate(by_slot):
            if not members:
                continue
            due = start_at + i * PACKET_S + slot * PACKET_S / slots
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            else:
                late.append((now - due) * 1000)
            for s in members:
                send_us = (time.monotonic_ns() - base_ns) // 1000
                packet = header.pack(0x80, codecs.PCMU, i & 0xFFFF, (i * 160) & 0xFFFFFFFF, s + 1)
                try:
                    legs.socks[s].sendto(packet + stamp(s, i, send_us), legs.targets[s])
                except OSError:
                    pass  # a full socket buffer: the packet is lost, as it would be
    total = count * sum(1 for m in by_slot if m)
    late += [0.0] * (total - len(late))
    report.send({"late_p95_ms": percentile(late, 95), "cpu_s": time.process_time() - cpu0})
    report.close()


@dataclass
class Window:
    first: int  # the first index measured
    last: int  # one past the last


def _receive(
    legs: Legs,
    base_ns: int,
    window: Window,
    sender: Any,
    latest: float,
    pids: dict[str, int],
    cpu_at: tuple[float, float],
) -> dict[str, Any]:
    """Read every leg's socket until a second after the sender reported it was done (it may
    run late on a loaded machine; at ``latest`` we stop anyway); the figures of what came,
    and the sender's report (None if it never came)."""
    streams = len(legs.socks)
    fds = {sock.fileno(): s for s, sock in enumerate(legs.socks)}
    poller = select.epoll()
    for fd in fds:
        poller.register(fd, select.EPOLLIN)
    seen: list[set[int]] = [set() for _ in range(streams)]
    delays: list[list[float]] = [[] for _ in range(streams)]
    counts = {"filler": 0, "misrouted": 0, "duplicates": 0, "outside_window": 0}
    cpu: list[dict[str, float]] = []
    own_cpu0, began = time.process_time(), time.monotonic()
    report: dict[str, Any] | None = None
    until = latest
    while (now := time.monotonic()) < until:
        if report is None and sender.poll():
            report = sender.recv()
            until = min(latest, now + DRAIN_S)
        if len(cpu) < 2 and now >= cpu_at[len(cpu)]:
            cpu.append({name: cpu_seconds(pid) for name, pid in pids.items()})
        for fd, _ in poller.poll(0.005):
            receiver = fds[fd]
            sock = legs.socks[receiver]
            sender_expected = receiver ^ 1  # caller ↔ agent of the same call
            while True:
                try:
                    data = sock.recv(2048)
                except BlockingIOError:
                    break
                arrived_us = (time.monotonic_ns() - base_ns) / 1000
                got = read_stamp(data[12:])
                if got is None:
                    counts["filler"] += 1
                    continue
                stream, index, send_us = got
                if stream != sender_expected:
                    counts["misrouted"] += 1
                    continue
                if not window.first <= index < window.last:
                    counts["outside_window"] += 1
                    continue
                if index in seen[stream]:
                    counts["duplicates"] += 1
                    continue
                seen[stream].add(index)
                delays[stream].append((arrived_us - send_us) / 1000)
    poller.close()
    while len(cpu) < 2:
        cpu.append({name: cpu_seconds(pid) for name, pid in pids.items()})
    expected = streams * (window.last - window.first)
    received = sum(len(s) for s in seen)
    all_delays = [d for per in delays for d in per]
    jitter = [d - min(per) for per in delays if per for d in per]
    seconds = cpu_at[1] - cpu_at[0]
    by_process = {name: round(100 * (cpu[1][name] - cpu[0][name]) / seconds, 1) for name in pids}
    return {
        "loss": round(1 - received / expected, 5) if expected else 0.0,
        "delay_p50_ms": round(percentile(all_delays, 50), 2),
        "delay_p95_ms": round(percentile(all_delays, 95), 2),
        "jitter_p95_ms": round(percentile(jitter, 95), 2),
        "cpu_pct": round(sum(by_process.values()), 1),
        "cpu_pct_by_process": by_process,
        "packets_expected": expected,
        "packets_received": received,
        **counts,
        "receiver_cpu_pct": round(100 * (time.process_time() - own_cpu0) / (now - began), 1),
        "sender_report": report,
    }


def run_once(relay: str, calls: int, *, seconds: float, warmup: float) -> dict[str, Any]:
    """One run: ``calls`` bridged calls through ``relay``, measured over ``seconds``."""
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-relay-{relay}-"))
    legs = Legs.make(calls)
    try:
        load_before = os.getloadavg()[0]
        with RELAY_STARTERS[relay](legs, workdir) as relaying:
            base_ns = time.monotonic_ns()
            start_at = time.monotonic() + 0.5
            tail = 0.3
            count = round((warmup + seconds + tail) / PACKET_S)
            window = Window(round(warmup / PACKET_S), round((warmup + seconds) / PACKET_S))
            parent_end, child_end = multiprocessing.get_context("fork").Pipe(duplex=False)
            sender = multiprocessing.get_context("fork").Process(
                target=_sender, args=(legs, base_ns, start_at, count, child_end), daemon=True
            )
            sender.start()
            child_end.close()
            cpu_at = (start_at + warmup, start_at + warmup + seconds)
            latest = start_at + count * PACKET_S + MAX_SENDER_BEHIND_S
            figures = _receive(legs, base_ns, window, parent_end, latest, relaying.pids, cpu_at)
            sent = figures.pop("sender_report") or {"late_p95_ms": None, "cpu_s": 0.0}
            sender.join(10)
            if sender.is_alive():
                sender.kill()
        figures["sender_late_p95_ms"] = (
            None if sent["late_p95_ms"] is None else round(sent["late_p95_ms"], 2)
        )
        figures["sender_cpu_pct"] = round(100 * sent["cpu_s"] / (count * PACKET_S), 1)
        if "tap_packets_received" in relaying.after:
            # The taps had copies of every packet sent (subscribed before the first).
            tap_expected = len(legs.socks) * count
            figures["tap_loss"] = round(
                1 - relaying.after["tap_packets_received"] / tap_expected, 5
            )
        figures["loadavg_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
        # The load was not offered as specified: its delay and CPU are not the relay's.
        late = figures["sender_late_p95_ms"]
        figures["generator_behind"] = late is None or late > GENERATOR_LATE_MS
        return figures
    finally:
        legs.close()
        shutil.rmtree(workdir, ignore_errors=True)


# --------------------------------------------------------------------------- the figures

KEYS = ("loss", "delay_p95_ms", "jitter_p95_ms", "cpu_pct")


def summarise(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Median and worst (highest) of each figure per relay; each other relay's medians
    over the own relay's (``ratio_to_own``; None where the own relay's is 0)."""
    summary: dict[str, Any] = {}
    for relay, results in runs.items():
        keys = [*KEYS, *(["tap_loss"] if all("tap_loss" in r for r in results) else [])]
        summary[relay] = {
            key: {
                "median": round(statistics.median(r[key] for r in results), 5),
                "worst": max(r[key] for r in results),
            }
            for key in keys
        }
        summary[relay]["runs_generator_behind"] = sum(
            bool(r.get("generator_behind")) for r in results
        )
    ratio: dict[str, dict[str, float | None]] = {}
    if "own" in summary:
        for relay in summary:
            if relay == "own":
                continue
            ratio[relay] = {}
            for key in KEYS:
                own = summary["own"][key]["median"]
                ratio[relay][key] = round(summary[relay][key]["median"] / own, 3) if own else None
    return {"summary": summary, "ratio_to_own": ratio}


def bench(
    ns: Sequence[int],
    *,
    repeat: int,
    seconds: float,
    warmup: float,
    relays: Sequence[str] = RELAYS,
    progress: bool = True,
) -> dict[str, Any]:
    per_n: dict[str, Any] = {}
    for n in ns:
        runs: dict[str, list[dict[str, Any]]] = {relay: [] for relay in relays}
        for r in range(repeat):
            for relay in relays:  # interleaved: both see the same machine
                result = run_once(relay, n, seconds=seconds, warmup=warmup)
                runs[relay].append(result)
                if progress:
                    print(f"N={n} run {r + 1} {relay}: {json.dumps(result)}", file=sys.stderr)
        per_n[str(n)] = {"runs": runs, **summarise(runs)}
    return {
        "benchmark": "relay",
        "nproc": os.cpu_count(),
        "config": {
            "n": list(ns),
            "repeat": repeat,
            "seconds": seconds,
            "warmup": warmup,
            "packets_per_s_per_direction": 50,
            "codec": "PCMU",
            "own": "telephony.bridge.Bridge over RtpSession legs, stereo WAV recorded",
            "rtpengine": _rtpengine_version(),
        },
        "by_n": per_n,
    }


def _rtpengine_version() -> str:
    try:
        out = subprocess.run(["rtpengine", "--version"], capture_output=True, text=True, timeout=10)
    except OSError:
        return "not installed"
    return f"rtpengine {(out.stdout + out.stderr).strip().split()[-1]} userspace (--table=-1)"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", default="50,100,250", help="concurrent calls, comma-separated")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0, help="measured window per run")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--relay", choices=RELAYS, action="append", help="default: both")
    parser.add_argument("--own-child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--tap-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.own_child is not None:
        own_child(args.own_child)
        return
    if args.tap_child is not None:
        tap_child(args.tap_child)
        return
    ns = [int(n) for n in args.n.split(",")]
    if any(n < 1 or n > 2000 for n in ns) or not 1 <= args.repeat <= 20:
        parser.error("--n between 1 and 2000, --repeat between 1 and 20")
    result = bench(
        ns,
        repeat=args.repeat,
        seconds=args.seconds,
        warmup=args.warmup,
        relays=args.relay or RELAYS,
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
