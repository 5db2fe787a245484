"""Load-generation helpers for the serving benchmarks: servers on loopback, driven by `wrk`.

Every server started here listens on 127.0.0.1 only and is stopped by the `running` context that
started it; every `wrk` run is bounded in time (and by its timeout per request).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

WRK_SCRIPT = Path(__file__).with_name("post_body.lua")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    seconds_to_ready: float

    def process_tree(self) -> list[psutil.Process]:
        """The server's process and every process it started (workers, their helpers)."""
        parent = psutil.Process(self.process.pid)
        return [parent, *parent.children(recursive=True)]

    def worker_rss_mib(self) -> list[float]:
        """Resident memory of each process serving requests (the workers, else the process)."""
        parent, *descendants = self.process_tree()
        children = [
            child
            for child in descendants
            if "python" in child.name().lower()
            and "resource_tracker" not in " ".join(child.cmdline())
        ]
        serving = children or [parent]
        return [round(p.memory_info().rss / 2**20, 1) for p in serving]


# New connections in a row that must be answered 2xx: with several workers, one worker's 200
# says nothing of another still loading its model in the background.
READY_IN_A_ROW = 12


def wait_until_ready(
    url: str, process: subprocess.Popen, timeout: float, log: Path | None = None
) -> None:
    """Poll `url` until it answers 2xx on `READY_IN_A_ROW` new connections in a row; fail with
    the server's output (its `log` file, or its piped stderr) if the process dies or `timeout`
    seconds pass first."""
    deadline = time.monotonic() + timeout
    answered = 0
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                answered += 1
                if answered >= READY_IN_A_ROW:
                    return
        except OSError:  # refused, reset, timed out, or an HTTP error status
            answered = 0
            if process.poll() is not None or time.monotonic() > deadline:
                if log is not None:
                    output = log.read_text()
                else:
                    output = process.stderr.read().decode() if process.stderr else ""
                message = f"{url} did not answer within {timeout:.0f} s:\n{output[-3000:]}"
                raise RuntimeError(message) from None
            time.sleep(0.05)


@contextlib.contextmanager
def running(
    command: list[str], ready_path: str, port: int, env: dict[str, str], timeout: float = 120
) -> Iterator[Server]:
    """Start a server on 127.0.0.1:`port`, wait for `ready_path` to answer 200, stop it after."""
    url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    # The server's output goes to a file, read only if it never gets ready: a pipe left unread
    # would block a chatty server.
    with tempfile.NamedTemporaryFile(prefix="server-", suffix=".log") as log:
        process = subprocess.Popen(
            command,
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # so that stopping it stops its workers too
        )
        try:
            wait_until_ready(url + ready_path, process, timeout, Path(log.name))
            yield Server(process, url, time.perf_counter() - started)
        finally:
            stop_group(process)


def stop_group(process: subprocess.Popen) -> None:
    """Stop a process started with `start_new_session=True` and everything it started: SIGTERM,
    then SIGKILL after 20 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def wrk(
    url: str,
    body: bytes,
    content_type: str,
    connections: int,
    seconds: float,
) -> dict[str, float]:
    """POST `body` to `url` from `connections` connections for `seconds`; the summary as a dict
    (requests/s, latency percentiles in ms, errors counted, non-2xx answers included)."""
    with tempfile.NamedTemporaryFile(suffix=".body") as stream:
        stream.write(body)
        stream.flush()
        result = subprocess.run(
            [
                "wrk",
                "--threads",
                "1",
                "--connections",
                str(connections),
                "--duration",
                f"{max(1, round(seconds))}s",
                "--timeout",
                "10s",
                "--script",
                str(WRK_SCRIPT),
                url,
            ],
            env={
                **os.environ,
                "WRK_BODY": stream.name,
                "WRK_CONTENT_TYPE": content_type,
            },
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            check=True,
        )
    line = next(line for line in result.stdout.splitlines() if line.startswith("{"))
    summary = json.loads(line)
    return {
        "connections": connections,
        "requests": summary["requests"],
        "requests_per_s": round(summary["requests"] / (summary["duration_us"] / 1e6), 1),
        "p50_ms": round(summary["p50_us"] / 1000, 2),
        "p90_ms": round(summary["p90_us"] / 1000, 2),
        "p99_ms": round(summary["p99_us"] / 1000, 2),
        "errors": sum(summary["errors"].values()),  # socket errors, time-outs and non-2xx
    }


def post_picture(url: str, filename: str, content: bytes, timeout: float = 30) -> dict:
    """POST one picture as the multipart field `file` to `url`; the JSON answer (a 4xx or 5xx
    raises `urllib.error.HTTPError`)."""
    body, content_type = multipart([("file", filename, content)])
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)


def multipart(files: list[tuple[str, str, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body of (field, filename, content) parts, and its content type."""
    boundary = "mnist-bench-boundary-7f3a"
    parts = []
    for field, filename, content in files:
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
            f'filename="{filename}"\r\nContent-Type: image/png\r\n\r\n'
        )
        parts.append(head.encode() + content + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"
