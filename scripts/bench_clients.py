#!/usr/bin/env python3
"""Real 9P clients through p9persist, measured side by side in one run.

diod's own client, diodcat, reads one file from a real diod over TCP loopback, with one request
in flight as most clients keep (the Linux kernel without a cache, diodcat, py9p), four ways:
direct, through `p9persist proxy`, through socat as a tuned byte relay (-b 1048576, nodelay
on both sides), and through `splice-relay` (tests/src/bin), the fastest hop user space can build:
no 9P, payloads moved with splice(2), one blocking thread per direction. proxy/splice is how
close the proxy comes to what any hop can do on this machine. Paired rounds rotate the order of
the paths; the figure per path is the median. Prints one table of throughput and ratios, and
writes it with an SVG plot (throughput per path and message size) to docs/bench/ (--out).

    scripts/bench_clients.py [--mb N] [--rounds N] [--msizes 8192,65536] [--binary PATH]
                             [--relay PATH] [--out DIR] [--cpu N]

With --cpu N every process runs on that one CPU and the table is only printed (not written):
what is left of each path's cost when no wake-up crosses CPUs.

Run by scripts/bench.sh, which installs diod and socat and builds the release binaries first.
"""

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

PATHS = ["direct", "proxy", "socat", "splice"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, what, proc=None):
    deadline = time.time() + 30
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            sys.exit(f"bench_clients: {what} exited with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.02)
    sys.exit(f"bench_clients: {what} did not listen on port {port}")


def tool(name):
    for d in ("/usr/sbin", "/usr/bin", "/sbin", "/bin"):
        p = os.path.join(d, name)
        if os.path.exists(p):
            return p
    sys.exit(f"bench_clients: {name} is missing (scripts/bench.sh installs it)")


def read_once(port, export, name, msize):
    """Seconds diodcat takes to read the file through `port`."""
    start = time.perf_counter()
    with open(os.devnull, "wb") as sink:
        subprocess.run(
            [tool("diodcat"), "-m", str(msize), "-s", f"127.0.0.1:{port}", "-a", export, name],
            stdout=sink,
            stderr=subprocess.PIPE,
            check=True,
        )
    return time.perf_counter() - start


def svg(figures, msizes, out):
    """Grouped bars: one group per message size, one bar per path (MB/s)."""
    colours = {"direct": "#4477aa", "proxy": "#ee6677", "socat": "#228833", "splice": "#ccbb44"}
    top = max(v for f in figures.values() for v in f.values()) * 1.15
    width, height, left, bottom, bar = 560, 320, 60, 40, 40
    plot_h = height - bottom - 40
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="12">',
        f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="14">'
        "diodcat reading from diod over TCP loopback (MB/s, median)</text>",
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - 10}" y2="{height - bottom}" stroke="black"/>',
    ]
    for i in range(5):
        v = top * i / 4
        y = height - bottom - plot_h * i / 4
        parts.append(f'<text x="{left - 6}" y="{y + 4:.0f}" text-anchor="end">{v:.0f}</text>')
        parts.append(f'<line x1="{left}" y1="{y:.0f}" x2="{width - 10}" y2="{y:.0f}" stroke="#ddd"/>')
    group = (width - left - 20) / len(msizes)
    for g, msize in enumerate(msizes):
        x0 = left + g * group + (group - bar * len(PATHS)) / 2
        for k, path in enumerate(PATHS):
            v = figures[msize][path]
            h = plot_h * v / top
            x = x0 + k * bar
            y = height - bottom - h
            parts.append(
                f'<rect x="{x:.0f}" y="{y:.0f}" width="{bar - 4}" height="{h:.0f}" fill="{colours[path]}"/>'
            )
            parts.append(f'<text x="{x + (bar - 4) / 2:.0f}" y="{y - 4:.0f}" text-anchor="middle">{v:.0f}</text>')
        parts.append(
            f'<text x="{left + g * group + group / 2:.0f}" y="{height - bottom + 16}" '
            f'text-anchor="middle">msize {msize // 1024} KiB</text>'
        )
    for k, path in enumerate(PATHS):
        parts.append(f'<rect x="{left + 10 + k * 90}" y="28" width="10" height="10" fill="{colours[path]}"/>')
        parts.append(f'<text x="{left + 24 + k * 90}" y="37">{path}</text>')
    parts.append("</svg>")
    with open(out, "w") as f:
        f.write("\n".join(parts) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=int, default=256, help="size of the file read (MiB)")
    ap.add_argument("--rounds", type=int, default=7, help="paired rounds per message size")
    ap.add_argument("--msizes", default="8192,65536", help="diodcat msizes to try")
    ap.add_argument("--binary", default="target/release/p9persist", help="the p9persist binary")
    ap.add_argument(
        "--cpu", type=int,
        help="run every process on this one CPU and only print the table (what cross-CPU wake-ups cost)",
    )
    ap.add_argument("--relay", default="target/release/splice-relay", help="the splice-relay binary")
    ap.add_argument("--out", default="docs/bench", help="where the table and plot go")
    args = ap.parse_args()
    msizes = [int(m) for m in args.msizes.split(",")]
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})  # inherited by every process started below
    if not os.path.exists(args.binary):
        sys.exit(f"bench_clients: no {args.binary}; build it with cargo build --release -p runtime-tokio")
    if not os.path.exists(args.relay):
        sys.exit(f"bench_clients: no {args.relay}; build it with cargo build --release -p tests --bin splice-relay")

    tmp = tempfile.mkdtemp(prefix="p9persist-clients-")
    procs = []
    try:
        export = os.path.join(tmp, "export")
        os.mkdir(export)
        with open(os.path.join(export, "data"), "wb") as f:
            for _ in range(args.mb):
                f.write(os.urandom(1 << 20))
        d_port, p_port, s_port, r_port = free_port(), free_port(), free_port(), free_port()
        devnull = open(os.devnull, "wb")
        diod = subprocess.Popen(
            [tool("diod"), "-f", "-n", "-c", "/dev/null", "-L", "stderr", "-l", f"127.0.0.1:{d_port}", "-e", export],
            stdout=devnull, stderr=devnull,
        )
        procs.append(diod)
        wait_listening(d_port, "diod", diod)
        proxy = subprocess.Popen(
            [args.binary, "proxy", "--listen", str(p_port), "--server", f"127.0.0.1:{d_port}"],
            stdout=devnull, stderr=open(os.path.join(tmp, "proxy.log"), "wb"),
        )
        procs.append(proxy)
        socat = subprocess.Popen(
            [tool("socat"), "-b", "1048576", f"TCP-LISTEN:{s_port},reuseaddr,fork,nodelay",
             f"TCP:127.0.0.1:{d_port},nodelay"],
            stdout=devnull, stderr=devnull,
        )
        procs.append(socat)
        relay = subprocess.Popen(
            [args.relay, f"127.0.0.1:{r_port}", f"127.0.0.1:{d_port}"], stdout=devnull
        )
        procs.append(relay)
        wait_listening(r_port, "splice-relay", relay)
        time.sleep(0.3)
        ports = {"direct": d_port, "proxy": p_port, "socat": s_port, "splice": r_port}
        # Warm the page cache and every path once.
        for path in PATHS:
            read_once(ports[path], export, "data", msizes[-1])
        figures = {}
        for msize in msizes:
            secs = {p: [] for p in PATHS}
            for r in range(args.rounds):
                order = PATHS[r % len(PATHS):] + PATHS[:r % len(PATHS)]
                for path in order:
                    secs[path].append(read_once(ports[path], export, "data", msize))
            figures[msize] = {p: args.mb * 1.048576 / statistics.median(secs[p]) for p in PATHS}
        lines = [
            f"real clients: diodcat reading {args.mb} MiB from diod over TCP loopback, one request in flight,",
            f"median of {args.rounds} paired rounds (order rotated); MB/s and ratios measured in this run"
            + (f"; every process on CPU {args.cpu}" if args.cpu is not None else ""),
            "",
            f"{'msize':>8} {'direct':>8} {'proxy':>8} {'socat':>8} {'splice':>8}   {'proxy/direct':>12} "
            f"{'proxy/socat':>11} {'proxy/splice':>12} {'splice/direct':>13}",
        ]
        for msize in msizes:
            f = figures[msize]
            lines.append(
                f"{msize:>8} {f['direct']:>8.0f} {f['proxy']:>8.0f} {f['socat']:>8.0f} {f['splice']:>8.0f}   "
                f"{f['proxy'] / f['direct']:>12.2f} {f['proxy'] / f['socat']:>11.2f} "
                f"{f['proxy'] / f['splice']:>12.2f} {f['splice'] / f['direct']:>13.2f}"
            )
        text = "\n".join(lines)
        print(text)
        if args.cpu is not None:
            return
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "clients.txt"), "w") as f:
            f.write(text + "\n")
        svg(figures, msizes, os.path.join(args.out, "clients.svg"))
        print(f"\nwrote {args.out}/clients.txt and {args.out}/clients.svg")
    finally:
        for p in procs:
            p.kill()
            p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
