"""mongoqueue side by side with arq, RQ, SAQ and procrastinate: one table, one run.

Usage (``scripts/bench-peers`` installs everything and runs this)::

    python bench/peers.py [--quick] [--only SYSTEM...] [--rows ROW...] [--no-write]

Starts its own servers on loopback, on free ports, in a temporary directory:
the embedded SecantusDB Rust server (``secantusd-rs``) or ``MONGODB_URI``,
Debian's ``redis-server`` and ``postgresql``; stops them at the end. Each system
runs in its own processes (``bench/peers_jobs.py``): the peers from the venv
``bench/.work/peers-venv``, mongoqueue from this interpreter's venv. The table
goes to stdout and into the "Side by side with peers" section of
bench/RESULTS.md. Not a test: nothing here asserts.

The rule, the same for every system: all jobs are enqueued first (untimed);
the clock runs from the start of the first worker (taken in the worker process
after its imports, right before the worker is created) until the last worker
has returned in burst mode (it stops by itself once the queue is empty). Jobs
per second = jobs / that time. Every run is then checked: no job left, every
job done.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pymongo
from pymongo import MongoClient

import mongoqueue
from mongoqueue.embedded import EmbeddedServer

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PEERS_PY = Path(os.environ.get("PEERS_PYTHON", HERE / ".work" / "peers-venv" / "bin" / "python"))
JOBS = HERE / "peers_jobs.py"
DB = "mongoqueue_peers"
RESULTS = HERE / "RESULTS.md"
BEGIN, END = "<!-- peers:begin -->", "<!-- peers:end -->"
#: Past this many seconds at its concurrency-8 rate, a system gets fewer jobs in
#: the 4-process row (rounded to a thousand; the table says so).
PROCESS_ROW_SECONDS = 45.0
#: The SecantusDB servers read every matching document for each claim (see "What
#: the SecantusDB servers do with depth" above in RESULTS.md): at 10,000 queued jobs a
#: claim there costs tens of milliseconds whatever the client, so the mongo-backed
#: systems get this many jobs in the 4-process row on the embedded server (not on
#: MONGODB_URI). The bare pymongo loop runs the same count, which shows it is the server.
EMBEDDED_PROCESS_ROW_JOBS = 2_000


@dataclass
class Workload:
    key: str
    label: str
    jobs: int
    concurrency: int  # per worker process
    processes: int
    sleep: float = 0.0


WORKLOADS = [
    Workload("noop1", "1,000 no-op jobs, concurrency 1", 1000, 1, 1),
    Workload("noop8", "1,000 no-op jobs, concurrency 8", 1000, 8, 1),
    Workload("io32", "400 jobs of 20 ms I/O, concurrency 32", 400, 32, 1, 0.02),
    Workload("procs4", "10,000 no-op jobs, 4 worker processes x concurrency 8", 10_000, 8, 4),
]


@dataclass
class System:
    key: str
    title: str
    backend: str  # mongo | redis | postgres
    peer: bool
    #: RQ runs one job at a time per process: concurrency C is C processes.
    process_per_job: bool = False


SYSTEMS = [
    System("mq-worker", "mongoqueue Worker", "mongo", False),
    System("mq-async", "mongoqueue AsyncWorker", "mongo", False),
    System("mq-cli", "`mongoqueue worker` (CLI)", "mongo", False),
    System("arq", "arq", "redis", True),
    System("rq-simple", "RQ SimpleWorker", "redis", True, process_per_job=True),
    System("rq-fork", "RQ Worker (fork)", "redis", True, process_per_job=True),
    System("saq", "SAQ", "redis", True),
    System("procrastinate", "procrastinate", "postgres", True),
    System("raw", "bare pymongo", "mongo", False),
]
PEER_PACKAGES = ["arq", "rq", "saq", "procrastinate", "redis", "psycopg", "psycopg-binary"]


@dataclass
class Result:
    rate: float | None = None
    jobs: int = 0
    seconds: float = 0.0
    note: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Any, what: str, deadline: float = 60.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not come up within {deadline:.0f} s")


# --------------------------------------------------------------------------- servers


class Servers:
    """The three servers, each on loopback on a free port, data in one temp dir."""

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="mongoqueue-peers-"))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.mongo: EmbeddedServer | None = None
        self.mongo_url = os.environ.get("MONGODB_URI", "")
        self.redis_url = self.pg_url = ""
        self.pg_bin = ""

    def start(self, backends: set[str]) -> None:
        if "mongo" in backends and not self.mongo_url:
            self.mongo = EmbeddedServer(prefer_rust=True)
            if self.mongo.kind != "rust":
                raise RuntimeError("secantusd-rs not found (scripts/bench-peers puts it on PATH)")
            self.mongo_url = self.mongo.start()
        if "redis" in backends:
            port = free_port()
            self.procs.append(
                subprocess.Popen(
                    [
                        "redis-server",
                        "--port",
                        str(port),
                        "--bind",
                        "127.0.0.1",
                        "--dir",
                        str(self.tmp),
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--loglevel",
                        "warning",
                    ],
                    stdout=subprocess.DEVNULL,
                )
            )
            self.redis_url = f"redis://127.0.0.1:{port}/0"
            wait_until(lambda: self.redis("ping").strip() == "PONG", "redis-server")
        if "postgres" in backends:
            self._start_postgres()

    def _as_postgres(self, args: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args

    def _start_postgres(self) -> None:
        versions = sorted(
            glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[4])
        )
        if not versions:
            raise RuntimeError("postgresql is not installed (scripts/bench-peers installs it)")
        self.pg_bin = versions[-1]
        data = self.tmp / "pg"
        if os.geteuid() == 0:
            shutil.chown(self.tmp, "postgres")
        subprocess.run(
            self._as_postgres(
                [
                    f"{self.pg_bin}/initdb",
                    "-D",
                    str(data),
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "--no-sync",
                ]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        port = free_port()
        self.procs.append(
            subprocess.Popen(
                self._as_postgres(
                    [
                        f"{self.pg_bin}/postgres",
                        "-D",
                        str(data),
                        "-p",
                        str(port),
                        "-k",
                        str(self.tmp),
                        "-c",
                        "listen_addresses=127.0.0.1",
                        "-c",
                        "fsync=off",
                        "-c",
                        "synchronous_commit=off",
                        "-c",
                        "full_page_writes=off",
                    ]
                ),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        self.pg_port = port
        self.pg_url = f"postgresql://postgres@127.0.0.1:{port}/bench"
        wait_until(lambda: self.psql("SELECT 1", "postgres") is not None, "postgres")

    def redis(self, *args: str) -> str:
        port = self.redis_url.rsplit(":", 1)[1].split("/")[0]
        return subprocess.run(
            ["redis-cli", "-p", port, *args], check=True, capture_output=True, text=True
        ).stdout

    def psql(self, sql: str, db: str = "bench") -> str:
        return subprocess.run(
            [
                f"{self.pg_bin}/psql",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.pg_port),
                "-U",
                "postgres",
                "-d",
                db,
                "-v",
                "ON_ERROR_STOP=1",
                "-qAtc",
                sql,
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    def reset(self, backend: str) -> str:
        """Empty the backend; return the URL its system connects to."""
        if backend == "mongo":
            with MongoClient(self.mongo_url) as c:
                c.drop_database(DB)
            return self.mongo_url
        if backend == "redis":
            self.redis("flushall")
            return self.redis_url
        self.psql("DROP DATABASE IF EXISTS bench", "postgres")
        self.psql("CREATE DATABASE bench", "postgres")
        return self.pg_url

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if self.mongo is not None:
            self.mongo.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


# --------------------------------------------------------------------------- one run


def python_of(system: System) -> str:
    return str(PEERS_PY) if system.peer else sys.executable


def child_env(sleep: float) -> dict[str, str]:
    env = dict(os.environ, PEERS_SLEEP=str(sleep), PYTHONPATH=str(HERE))
    env.pop("PEERS_CLI_REPORT", None)
    return env


def run_child(system: System, action: str, url: str, jobs: int, sleep: float) -> str:
    out = subprocess.run(
        [python_of(system), str(JOBS), system.key, action, "--jobs", str(jobs), "--url", url],
        env=child_env(sleep),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{system.key} {action} failed:\n{out.stderr[-2000:]}")
    return out.stdout


def measure(servers: Servers, system: System, w: Workload, jobs: int) -> Result:
    url = servers.reset(system.backend)
    run_child(system, "enqueue", url, jobs, w.sleep)
    processes, concurrency = w.processes, w.concurrency
    if system.process_per_job:  # RQ: one process per concurrent job, or the row's processes
        processes, concurrency = (w.processes if w.processes > 1 else w.concurrency), 1
    env = child_env(w.sleep)
    reports: list[Path] = []
    procs: list[subprocess.Popen[str]] = []
    for i in range(processes):
        if system.key == "mq-cli":
            report = servers.tmp / f"cli-{i}.json"
            reports.append(report)
            cmd = [
                str(Path(sys.executable).with_name("mongoqueue")),
                "--uri",
                url,
                "--db",
                DB,
                "--collection",
                "jobs",
                "worker",
                "peers_jobs:mq_job",
                "-c",
                str(concurrency),
                "--burst",
                "--timeout",
                "300",
                "--log-level",
                "WARNING",
            ]
            procs.append(
                subprocess.Popen(
                    cmd,
                    env=dict(env, PEERS_CLI_REPORT=str(report)),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        else:
            cmd = [
                python_of(system),
                str(JOBS),
                system.key,
                "work",
                "--jobs",
                str(jobs),
                "--concurrency",
                str(concurrency),
                "--url",
                url,
            ]
            procs.append(
                subprocess.Popen(
                    cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
                )
            )
    outcomes = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=900)
        if p.returncode != 0:
            raise RuntimeError(f"{system.key} worker exited {p.returncode}:\n{stderr[-2000:]}")
        if system.key != "mq-cli":
            outcomes.append(json.loads(stdout.strip().splitlines()[-1]))
    for report in reports:
        outcomes.append(json.loads(report.read_text()))
        report.unlink()
    counts = json.loads(run_child(system, "count", url, jobs, w.sleep))
    start = min(o["start"] for o in outcomes)
    seconds = max(o["end"] for o in outcomes) - start
    ran = [o["ran"] for o in outcomes]
    ran_total = None if None in ran else sum(ran)
    exact = counts["left"] == 0 and counts["done"] == jobs and ran_total in (None, jobs)
    note = (
        ""
        if exact
        else (
            f"CHECK FAILED: {counts['left']} left, {counts['done']} done, handler ran {ran_total}"
        )
    )
    return Result(
        jobs / seconds,
        jobs,
        seconds,
        note,
        {"processes": processes, "concurrency": concurrency, **counts, "ran": ran_total},
    )


# --------------------------------------------------------------------------- versions


def versions(systems: list[System]) -> dict[str, str]:
    v = {
        "mongoqueue": mongoqueue.__version__ if hasattr(mongoqueue, "__version__") else "?",
        "pymongo": pymongo.version,
    }
    try:
        from importlib.metadata import version

        v["mongoqueue"] = version("mongoqueue")
    except Exception:
        pass
    if any(s.peer for s in systems):
        code = (
            "import json, importlib.metadata as m\n"
            f"print(json.dumps({{p: m.version(p) for p in {PEER_PACKAGES!r}}}))"
        )
        out = subprocess.run(
            [str(PEERS_PY), "-c", code], capture_output=True, text=True, check=True
        )
        v.update(json.loads(out.stdout))
    return v


def server_versions(servers: Servers, backends: set[str]) -> dict[str, str]:
    v: dict[str, str] = {}
    if "mongo" in backends:
        with MongoClient(servers.mongo_url) as c:
            info = c.server_info()
        name = "SecantusDB secantusd-rs" if servers.mongo is not None else "MongoDB"
        v["mongo server"] = f"{name} (reports {info.get('version', '?')})"
    if "redis" in backends:
        v["redis-server"] = servers.redis("info", "server").split("redis_version:")[1].split()[0]
    if "postgres" in backends:
        v["postgresql"] = servers.psql("SHOW server_version", "postgres").strip()
    return v


# --------------------------------------------------------------------------- table


def fmt(r: Result | None) -> str:
    if r is None or r.rate is None:
        return "-" if r is None else (r.note or "-")
    text = f"{r.rate:,.0f}"
    if r.note:
        text += " !"
    return text


def best_rate(row: dict[str, Result], chosen: Any) -> float | None:
    """The highest rate of the systems ``chosen(key)`` selects whose run checked out."""
    rates = [r.rate for k, r in row.items() if r.rate and not r.note and chosen(k)]
    return max(rates) if rates else None


def table(
    results: dict[str, dict[str, Result]], workloads: list[Workload], systems: list[System]
) -> list[str]:
    head = [
        "workload",
        *[s.title for s in systems],
        "mq best ÷ best peer",
        "mq best ÷ bare pymongo",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    peer_keys = frozenset(s.key for s in systems if s.peer)
    for w in workloads:
        row = results.get(w.key, {})
        cells = [w.label]
        for s in systems:
            r = row.get(s.key)
            cell = fmt(r)
            if r is not None and r.rate is not None and r.jobs != w.jobs:
                cell += f" ({r.jobs:,} jobs)"
            cells.append(cell)

        mq = best_rate(row, lambda k: k.startswith("mq-"))
        peer = best_rate(row, peer_keys.__contains__)
        raw = best_rate(row, lambda k: k == "raw")
        cells.append(f"{mq / peer:.2f}x" if mq and peer else "-")
        cells.append(f"{mq / raw:.2f}x" if mq and raw else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def write_results(section: list[str]) -> None:
    text = RESULTS.read_text()
    block = "\n".join([BEGIN, *section, END])
    if BEGIN in text and END in text:
        before, rest = text.split(BEGIN, 1)
        after = rest.split(END, 1)[1]
        text = before + block + after
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    RESULTS.write_text(text)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a tenth of the jobs (a smoke run)")
    p.add_argument("--only", nargs="+", metavar="SYSTEM", help=" ".join(s.key for s in SYSTEMS))
    p.add_argument("--rows", nargs="+", metavar="ROW", help=" ".join(w.key for w in WORKLOADS))
    p.add_argument("--no-write", action="store_true", help="do not update bench/RESULTS.md")
    a = p.parse_args()
    systems = [s for s in SYSTEMS if not a.only or s.key in a.only]
    workloads = [w for w in WORKLOADS if not a.rows or w.key in a.rows]
    if a.quick:
        workloads = [
            Workload(
                w.key,
                w.label + " (quick: 1/10)",
                max(w.jobs // 10, 40),
                w.concurrency,
                w.processes,
                w.sleep,
            )
            for w in workloads
        ]
    backends = {s.backend for s in systems}
    servers = Servers()
    results: dict[str, dict[str, Result]] = {}
    began = time.monotonic()
    load_before = os.getloadavg()[0]
    try:
        servers.start(backends)
        ver = versions(systems)
        ver.update(server_versions(servers, backends))
        noop8: dict[str, float] = {}
        for w in workloads:
            for s in systems:
                jobs = w.jobs
                if w.key == "procs4" and s.key in noop8:
                    affordable = int(noop8[s.key] * PROCESS_ROW_SECONDS) // 1000 * 1000
                    jobs = max(1000, min(jobs, affordable))
                if w.key == "procs4" and s.backend == "mongo" and servers.mongo is not None:
                    jobs = min(jobs, EMBEDDED_PROCESS_ROW_JOBS // (10 if a.quick else 1))
                log(f"{w.label}: {s.title} ({jobs:,} jobs)")
                try:
                    r = measure(servers, s, w, jobs)
                except Exception as exc:  # a peer failing must not lose the others' figures
                    log(f"  FAILED: {exc}")
                    r = Result(None, jobs, 0.0, "failed")
                results.setdefault(w.key, {})[s.key] = r
                if r.rate:
                    log(f"  {r.rate:,.0f} jobs/s ({r.seconds:.2f} s) {r.note} {r.detail}")
                    if w.key == "noop8":
                        noop8[s.key] = r.rate
    finally:
        servers.stop()
    elapsed = time.monotonic() - began
    load = (load_before, os.getloadavg()[0])
    lines = section(a, results, workloads, systems, ver, elapsed, load)
    print("\n".join(lines))
    if not a.no_write:
        write_results(lines)
        log(f"written to {RESULTS.relative_to(ROOT)}")
    return 0


def section(
    a: argparse.Namespace,
    results: dict[str, dict[str, Result]],
    workloads: list[Workload],
    systems: list[System],
    ver: dict[str, str],
    elapsed: float,
    load: tuple[float, float],
) -> list[str]:
    cmd = "scripts/bench-peers " + shlex.join(sys.argv[1:])
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    lines = [
        "## Side by side with peers",
        "",
        f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC with `{cmd.strip()}` "
        f"({elapsed / 60:.1f} min) on {os.cpu_count()} cores ({cpu}), "
        f"{platform.platform()}, Python {platform.python_version()}; the servers, the "
        "workers and the benchmark share those cores (1-minute load average "
        f"{load[0]:.1f} at the start, {load[1]:.1f} at the end: other work on the machine "
        "counts too).",
        "",
        "Jobs per second (higher is better). **Rule, the same for every system:** all jobs "
        "are enqueued first (untimed); the clock runs from the start of the first worker "
        "(in its process, after the imports, right before the worker is created) until the "
        "last worker returns in burst mode (it stops by itself once the queue is empty); "
        "then every run is checked: nothing left, every job done (`!` marks a failed check).",
        "",
        *table(results, workloads, systems),
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in ver.items()) + ".",
        "",
        "- Servers, started by the script on loopback: mongoqueue on the embedded SecantusDB "
        "Rust server (or `MONGODB_URI`); arq, RQ and SAQ on Debian's `redis-server` "
        "(no persistence); procrastinate on Debian's PostgreSQL (`fsync=off`, "
        "`synchronous_commit=off`: the peers get their fastest settings).",
        "- Concurrency: threads for the mongoqueue Worker and the CLI worker (its handler "
        "is a plain function), asyncio tasks for the AsyncWorker, arq (`max_jobs`), SAQ and "
        "procrastinate. RQ runs one job at a time per process, so RQ's concurrency C is C "
        "worker processes in the one-worker rows, and 4 processes in the 4-process row "
        "(their start-up is inside the clock, as for everyone); the fork "
        "Worker forks a child per job. Handlers: a no-op, or `time.sleep(0.02)` / "
        "`asyncio.sleep(0.02)`.",
        "- Idle waits set short where a system has the knob (mongoqueue Worker and "
        "AsyncWorker `idle_wait=0.05`, arq `poll_delay=0.01`, SAQ `dequeue_timeout=0.05`), "
        "defaults otherwise: `mongoqueue worker` has no option for it and waits its 1 s "
        "`idle_wait` before it sees the queue empty, inside its clock.",
        "- **bare pymongo**: the same claim (`find_one_and_update`, same filter, sort and "
        "index) and fenced `delete_one` that a mongoqueue job costs, in a loop per thread "
        "(bench/measure.py `RawConsumer`), on the same server: what the test server allows. "
        "`mq best ÷ bare pymongo` near 1 means the gap to the peers is the server; far "
        "below 1 means it is ours.",
    ]
    if not os.environ.get("MONGODB_URI"):
        lines.append(
            f"- 4-process row on the embedded SecantusDB server: {EMBEDDED_PROCESS_ROW_JOBS:,} "
            "jobs for mongoqueue and bare pymongo, not 10,000: that server reads every "
            "matching document for each claim, so a claim at 10,000 queued jobs costs it tens "
            'of milliseconds whatever the client (see "What the SecantusDB servers do with '
            'depth" above). On mongod (`MONGODB_URI=... scripts/bench-peers`) every system '
            "gets 10,000."
        )
    reduced = [
        f"{s.title}: {r.jobs:,}"
        for s in systems
        if (r := results.get("procs4", {}).get(s.key)) is not None
        and r.jobs != 10_000
        and not (s.backend == "mongo" and r.jobs == EMBEDDED_PROCESS_ROW_JOBS)
    ]
    if reduced and not a.quick:
        lines.append(
            f"- Fewer jobs in the 4-process row for the systems that would take more than "
            f"{PROCESS_ROW_SECONDS:.0f} s at their concurrency-8 rate: " + ", ".join(reduced) + "."
        )
    return lines


if __name__ == "__main__":
    sys.exit(main())
