#!/usr/bin/env python3
"""Where commit-to-arrival goes, step by step, read off the wire.

The bench's latency scenario times a producer's COMMIT returning and the
request arriving; this splits that span by the packets in between, without
touching the daemon or the server:

    COMMIT returns -> NOTIFY reaches the daemon -> the daemon sends its
    fan-out statement -> the first reply packet -> the POST goes out

Capture loopback while a latency run is in its window, then read the file:

    tcpdump -i lo -s 400 -w /tmp/latency.pcap \
        'tcp and (tcp[tcpflags] & tcp-push != 0)' &   # for ~10 s
    python3 crates/bench/tools/latency_timeline.py /tmp/latency.pcap [pg_port]

Only the Python standard library is used. Steps are matched by time: at
200 events/s each event's steps come and go before the next event's
COMMIT; a chain longer than 20 ms from the COMMIT being sent is left out
(the count matched is printed).
"""

import bisect
import struct
import sys

CHAIN_LIMIT_S = 0.020


def packets(path):
    """(time, source port, destination port, payload) of each TCP packet."""
    with open(path, "rb") as f:
        header = f.read(24)
        magic, = struct.unpack("<I", header[:4])
        if magic not in (0xA1B2C3D4, 0xA1B23C4D):
            sys.exit(f"{path}: not a little-endian pcap file (write it with tcpdump -w)")
        scale = 1e9 if magic == 0xA1B23C4D else 1e6
        link, = struct.unpack("<I", header[20:24])
        skip = {1: 14, 113: 16, 276: 20, 0: 4}.get(link)
        if skip is None:
            sys.exit(f"{path}: link type {link} is not read here; capture on -i lo")
        while True:
            record = f.read(16)
            if len(record) < 16:
                return
            seconds, fraction, captured, _ = struct.unpack("<IIII", record)
            frame = f.read(captured)
            ip = frame[skip:]
            if not ip:
                continue
            if ip[0] >> 4 == 4:
                if ip[9] != 6:
                    continue
                tcp = ip[(ip[0] & 15) * 4:]
            elif ip[0] >> 4 == 6:
                if ip[6] != 6:
                    continue
                tcp = ip[40:]
            else:
                continue
            if len(tcp) < 20:
                continue
            source, destination = struct.unpack(">HH", tcp[:4])
            payload = tcp[(tcp[12] >> 4) * 4:]
            if payload:
                yield seconds + fraction / scale, source, destination, payload


def steps(path, pg_port):
    """Each producer COMMIT as (request, reply), and the times of the other
    kinds of step, each list in order."""
    found = {"commits": [], "notify": [], "fan_out": [], "fan_out_reply": [], "post": []}
    fan_out_ports = set()
    asked = {}  # producer port -> when its COMMIT was sent
    for time, source, destination, payload in packets(path):
        if destination == pg_port and b"daemon_fan_out_lease" in payload:
            found["fan_out"].append(time)
            fan_out_ports.add(source)
        elif destination == pg_port and payload[:1] == b"Q" and b"COMMIT" in payload[:16]:
            asked[source] = time
        elif source == pg_port and destination in fan_out_ports and payload[:1] in b"12TDC":
            found["fan_out_reply"].append(time)
        elif source == pg_port and payload[:1] == b"A":
            found["notify"].append(time)
        elif source == pg_port and destination in asked and b"COMMIT\x00" in payload[:16]:
            found["commits"].append((asked.pop(destination), time))
        elif payload[:5] == b"POST ":
            found["post"].append(time)
    return found


def after(times, t):
    i = bisect.bisect_left(times, t)
    return times[i] if i < len(times) else None


def chains(found):
    """Per producer COMMIT: when it returned, and when each step followed.
    The NOTIFY can reach the daemon before the COMMIT's reply reaches the
    producer, so it is looked for from the moment the COMMIT was sent."""
    for sent, returned in found["commits"]:
        chain = [returned]
        t = sent
        for kind in ("notify", "fan_out", "fan_out_reply", "post"):
            t = after(found[kind], t)
            if t is None:
                break
            chain.append(t)
        if len(chain) == 5 and chain[-1] - sent <= CHAIN_LIMIT_S:
            yield chain


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    pg_port = int(sys.argv[2]) if len(sys.argv) == 3 else 5432
    found = steps(sys.argv[1], pg_port)
    matched = list(chains(found))
    print(f"producer COMMITs {len(found['commits'])}, chains matched {len(matched)}")
    if not matched:
        return
    # (name, from step, to step) over a chain: COMMIT returned, NOTIFY,
    # fan-out sent, its reply, POST.
    spans = [
        ("COMMIT returns -> NOTIFY arrives (< 0: before)", 0, 1),
        ("NOTIFY -> fan-out statement sent", 1, 2),
        ("fan-out sent -> first reply packet", 2, 3),
        ("reply -> POST sent", 3, 4),
        ("COMMIT returns -> POST sent", 0, 4),
    ]
    print(f"{'step':48s} {'p50 ms':>8s} {'p90 ms':>8s} {'p99 ms':>8s}")
    for name, start, end in spans:
        values = [(c[end] - c[start]) * 1000 for c in matched]
        print(f"{name:48s} {percentile(values, 0.5):8.3f} {percentile(values, 0.9):8.3f} "
              f"{percentile(values, 0.99):8.3f}")

if __name__ == "__main__":
    main()
