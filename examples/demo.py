"""`make demo`: one flagd, four gunicorn workers, one shared snapshot.

1. flagd publishes a temporary copy of examples/flags.json into shared memory.
2. gunicorn (examples/gunicorn, preload_app, 4 workers) serves the example app on 127.0.0.1; the
   demo asks until every worker has answered and shows each one's pid, variant and snapshot version.
3. The demo edits the copy (ships `new-dashboard` to everyone); flagd publishes a new version and
   every worker serves it on its next request. The workers never ask for flags themselves: they
   point at a local stand-in for Amplitude that counts requests, and it stays at zero.
4. Everything stops; the shared-memory files of the demo are removed.

Exits 0 when all of that happened, 1 (with the reason) otherwise. Runs in a few seconds.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil

from amplitude_experiment.snapshot import SnapshotReader, remove_all

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
BIN = Path(sys.executable).parent
WORKERS = 4
FLAG = "new-dashboard"
USER_ID = "demo-user"
DEPLOYMENT_KEY = "server-demo-deployment-key"
POLL_INTERVAL_MS = 250
TIMEOUT = 30.0  # for each step; the whole demo normally takes a few seconds


class DemoFailed(Exception):
    pass


def wait_until(condition, what, timeout=TIMEOUT, interval=0.05):
    """Poll ``condition`` until it returns something truthy, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise DemoFailed("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(interval)


class CountingAmplitude:
    """A local stand-in for Amplitude's flag API that answers 503 and counts who asked."""

    def __init__(self):
        counter = self
        self.requests = 0

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                counter.requests += 1
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="demo-amplitude", daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class NotifySocket:
    """What systemd would hear from flagd: a datagram socket named by NOTIFY_SOCKET."""

    def __init__(self, folder):
        self.address = os.path.join(folder, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.address)
        self.sock.setblocking(False)

    def ready(self):
        """The READY=1 message once flagd has sent it, else None."""
        while True:
            try:
                message = self.sock.recv(4096).decode()
            except BlockingIOError:
                return None
            if "READY=1" in message.split("\n"):
                return message

    def close(self):
        self.sock.close()


def start(argv, env, log_path):
    log = open(log_path, "wb")
    try:
        return subprocess.Popen(argv, env=env, cwd=str(ROOT), stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        log.close()


def stop(process, name, timeout=15.0):
    """SIGTERM, wait, then SIGKILL the process group; returns the exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            print("  %s did not stop in %.0f s; killing it" % (name, timeout))
    try:
        os.killpg(process.pid, signal.SIGKILL)  # anything left in its group
    except (ProcessLookupError, PermissionError):
        pass
    return process.wait(5)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ask(url):
    request = urllib.request.Request(url, headers={"Connection": "close"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def every_worker(url, workers, max_requests=2000):
    """Request until each worker pid has answered; the first answer of each, by pid."""
    answers = {}
    deadline = time.monotonic() + TIMEOUT
    for _ in range(max_requests):
        answer = ask(url)
        answers.setdefault(answer["pid"], answer)
        if set(answers) >= workers:
            return answers
        if time.monotonic() > deadline:
            break
    raise DemoFailed("workers %s never answered" % sorted(workers - set(answers)))


def show(answers):
    for pid, answer in sorted(answers.items()):
        print("  worker pid %-7d  %s = %-4s  (snapshot v%s)"
              % (pid, FLAG, answer["variants"].get(FLAG), answer["snapshot_version"]))


def ship_to_everyone(flags_file):
    """Edit the copy as someone would in Amplitude: the flag's last segment now serves "on"."""
    flags = json.loads(flags_file.read_text())
    flag = next(f for f in flags if f["key"] == FLAG)
    flag["segments"][-1]["variant"] = "on"
    flag["metadata"]["flagVersion"] += 1
    scratch = flags_file.with_suffix(".tmp")
    scratch.write_text(json.dumps(flags, indent=2))
    os.replace(scratch, flags_file)  # flagd never reads a half-written file


def run(folder):
    prefix = "amplitude-demo-%d" % os.getpid()
    flags_file = Path(folder) / "flags.json"
    shutil.copy(EXAMPLES / "flags.json", flags_file)
    amplitude = CountingAmplitude()
    notify = NotifySocket(folder)
    env = dict(os.environ, AMPLITUDE_DEPLOYMENT_KEY=DEPLOYMENT_KEY, AMPLITUDE_SHM_PREFIX=prefix,
               AMPLITUDE_FLAG_SOURCE="auto", AMPLITUDE_SERVER_URL=amplitude.url,
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    env.pop("NOTIFY_SOCKET", None)
    flagd = gunicorn = None
    try:
        print("1. flagd publishes %s (a temporary copy of examples/flags.json)" % flags_file)
        flagd = start([sys.executable, "-m", "flagd", "run", "--flags-file", str(flags_file),
                       "--poll-interval-ms", str(POLL_INTERVAL_MS), "--shm-prefix", prefix,
                       "--state-dir", str(Path(folder) / "state")],
                      dict(env, NOTIFY_SOCKET=notify.address), Path(folder) / "flagd.log")
        ready = wait_until(lambda: notify.ready() or (flagd.poll() is not None and "exited"), "flagd to be ready")
        if flagd.poll() is not None:
            raise DemoFailed("flagd exited with status %s" % flagd.returncode)
        print("   flagd told systemd: %s" % ready.replace("\n", "  "))
        reader = SnapshotReader(prefix, DEPLOYMENT_KEY)

        port = free_port()
        url = "http://127.0.0.1:%d/?user_id=%s" % (port, USER_ID)
        print("2. gunicorn, %d workers (preload_app), on 127.0.0.1:%d" % (WORKERS, port))
        gunicorn = start([str(BIN / "gunicorn"), "-c", str(EXAMPLES / "gunicorn" / "gunicorn.conf.py"),
                          "wsgi_app:application"],
                         # XDG_RUNTIME_DIR: gunicorn 24+ puts its control socket there (else in ~/.gunicorn)
                         dict(env, GUNICORN_BIND="127.0.0.1:%d" % port, GUNICORN_WORKERS=str(WORKERS),
                              XDG_RUNTIME_DIR=folder),
                         Path(folder) / "gunicorn.log")

        def workers_up():
            if gunicorn.poll() is not None:
                raise DemoFailed("gunicorn exited with status %s" % gunicorn.returncode)
            pids = {child.pid for child in psutil.Process(gunicorn.pid).children()}
            return pids if len(pids) == WORKERS else None

        workers = wait_until(workers_up, "%d gunicorn workers" % WORKERS)
        before = every_worker(url, workers)
        show(before)
        if {a["variants"].get(FLAG) for a in before.values()} != {"off"}:
            raise DemoFailed("expected %s=off for %s before the edit" % (FLAG, USER_ID))

        old_version = reader.current_version()
        print("3. editing the flags file: %s now serves \"on\" to everyone" % FLAG)
        ship_to_everyone(flags_file)
        new_version = wait_until(lambda: reader.current_version() > old_version and reader.current_version(),
                                 "flagd to publish the edit")
        print("   flagd published v%d" % new_version)
        after = every_worker(url, workers)
        show(after)
        if {a["variants"].get(FLAG) for a in after.values()} != {"on"}:
            raise DemoFailed("a worker still serves the old variant: %s" % after)
        if min(a["snapshot_version"] for a in after.values()) < new_version:
            raise DemoFailed("a worker still evaluates an old snapshot: %s" % after)
        print("   every worker switched; flag requests from the workers: %d" % amplitude.requests)
        if amplitude.requests:
            raise DemoFailed("workers polled for flags %d times; they should read flagd's snapshot" % amplitude.requests)
    finally:
        print("4. stopping")
        statuses = {}
        if gunicorn is not None:
            statuses["gunicorn"] = stop(gunicorn, "gunicorn")
        if flagd is not None:
            statuses["flagd"] = stop(flagd, "flagd")
        remove_all(prefix, DEPLOYMENT_KEY)
        for leftover in Path("/dev/shm").glob(prefix + ".*"):  # flagd's lock file; the prefix is the demo's own
            leftover.unlink()
        amplitude.close()
        notify.close()
        print("   " + ", ".join("%s exited %s" % item for item in statuses.items()))
    if any(statuses.values()):
        raise DemoFailed("unclean exit: %s" % statuses)


def main():
    folder = tempfile.mkdtemp(prefix="amplitude-demo-")
    try:
        run(folder)
    except DemoFailed as failure:
        for name in ("flagd.log", "gunicorn.log"):
            path = Path(folder) / name
            if path.exists():
                print("--- %s (last lines) ---\n%s" % (name, "\n".join(path.read_text(errors="replace").splitlines()[-15:])))
        print("demo FAILED: %s" % failure)
        return 1
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print("demo OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
