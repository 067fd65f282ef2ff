"""The segment protocol across real processes: torn reads, SIGKILL mid-publish, permissions, conflicts.

Every process is bounded in time and joined with a timeout; results come back over pipes.
"""

import grp
import multiprocessing
import os
import random
import signal
import time
from hashlib import blake2b
from typing import Any, Dict

import posix_ipc
import pytest

from amplitude_experiment.snapshot import (
    SnapshotCorruptError,
    SnapshotPermissionError,
    SnapshotReader,
    SnapshotWriter,
    WriterConflictError,
    version_name,
    index_name,
    list_versions,
)

pytestmark = pytest.mark.multiprocess

KEY = "server-torture-key-0123456789"
OTHER_KEY = "server-other-key-9876543210"
CTX = multiprocessing.get_context("fork")
TORTURE_SECONDS = 3.0
JOIN_SECONDS = 30.0


def make_document(version: int, blob: bytes) -> Dict[str, Any]:
    return {"version": version, "blob": blob, "digest": blake2b(blob, digest_size=16).digest()}


def intact(version: int, snapshot: Any) -> bool:
    """Whether ``snapshot`` is the whole document the writer published as ``version``."""
    doc = snapshot.document
    return (snapshot.version == version == doc.get("version")
            and blake2b(doc["blob"], digest_size=16).digest() == doc["digest"])


def publish_loop(prefix: str, go: Any, seconds: float, min_size: int, max_size: int, conn: Any) -> None:
    """Writer process: publish as fast as possible until the deadline (or until killed)."""
    rng = random.Random(os.getpid())
    base = rng.randbytes(max_size)
    with SnapshotWriter(prefix, KEY) as writer:
        go.wait(10)
        deadline = time.monotonic() + seconds
        published = 0
        while time.monotonic() < deadline:
            size = rng.randint(min_size, max_size)
            start = rng.randrange(max_size)
            blob = (base[start:] + base[:start])[:size]
            writer.publish(make_document(writer.version + 1, blob))
            published += 1
    conn.send(published)


def read_loop(prefix: str, go: Any, seconds: float, conn: Any) -> None:
    """Reader process: validate every read, through the uncached path and the cached one."""
    counts = dict(reads=0, torn=0, caught=0, retries=0, versions=0, cached_reads=0)
    reader = SnapshotReader(prefix, KEY)
    go.wait(10)
    deadline = time.monotonic() + seconds
    last = 0
    while time.monotonic() < deadline:
        version = reader.current_version()
        if version == 0:
            continue
        try:
            snapshot = reader.read(version)  # opens, checks header + crc32, decodes: every time
        except posix_ipc.ExistentialError:
            counts["retries"] += 1  # unlinked (KEEP=2) between our index read and our open
            continue
        except SnapshotCorruptError:
            counts["caught"] += 1
            continue
        counts["reads"] += 1
        if not intact(version, snapshot):
            counts["torn"] += 1
        if version != last:
            counts["versions"] += 1
            last = version
        cached = reader.load()  # the SDK's path: once per version, keeps the previous on retries
        if cached is not None:
            counts["cached_reads"] += 1
            if not intact(cached.version, cached):
                counts["torn"] += 1
    conn.send(counts)


def run_bounded(processes: list) -> None:
    for process in processes:
        process.join(JOIN_SECONDS)
    for process in processes:
        if process.is_alive():
            process.kill()
            process.join(5)
            pytest.fail("process %s did not finish in time" % process.name)


def test_torture_zero_torn_reads(shm_prefix):
    go = CTX.Event()
    writer_recv, writer_send = CTX.Pipe(duplex=False)
    writer = CTX.Process(target=publish_loop, name="writer",
                         args=(shm_prefix, go, TORTURE_SECONDS, 1024, 256 * 1024, writer_send))
    readers, pipes = [], []
    for n in range(2):
        recv, send = CTX.Pipe(duplex=False)
        pipes.append(recv)
        readers.append(CTX.Process(target=read_loop, name="reader-%d" % n, args=(shm_prefix, go, TORTURE_SECONDS, send)))
    for process in [writer] + readers:
        process.start()
    go.set()
    assert writer_recv.poll(JOIN_SECONDS), "writer sent nothing"
    published = writer_recv.recv()
    results = []
    for recv in pipes:
        assert recv.poll(JOIN_SECONDS), "a reader sent nothing"
        results.append(recv.recv())
    run_bounded([writer] + readers)
    print("\ntorture %.0f s: writer published %d versions (1-256 KiB)" % (TORTURE_SECONDS, published))
    for n, counts in enumerate(results):
        print("  reader %d: %s" % (n, " ".join("%s=%d" % item for item in counts.items())))
    assert published > 50
    for counts in results:
        assert counts["torn"] == 0, counts
        assert counts["caught"] == 0, counts  # immutable segments: not even a detected tear
        assert counts["reads"] > 50 and counts["versions"] > 10, counts


def stopped(pid: int, deadline: float) -> bool:
    """Wait until ``pid`` is in state T (SIGSTOP is delivered asynchronously)."""
    while time.monotonic() < deadline:
        with open("/proc/%d/stat" % pid) as handle:
            if handle.read().rsplit(")", 1)[1].split()[0] in ("T", "t"):
                return True
    return False


def stop_mid_publish(pid: int, prefix: str, reader: SnapshotReader, deadline: float) -> None:
    """Freeze the writer between shm_open(O_CREX) of the next segment and its index store.

    Spot the next version file appearing while the index still names the previous version, SIGSTOP,
    and check that this still holds once stopped; otherwise let it run and try the next publish.
    """
    for _ in range(200):
        current = reader.current_version()
        pending = "/dev/shm/" + version_name(prefix, KEY, current + 1).lstrip("/")
        while not os.path.exists(pending) and time.monotonic() < deadline:
            pass
        os.kill(pid, signal.SIGSTOP)
        assert stopped(pid, deadline), "writer did not stop"
        if reader.current_version() == current and os.path.exists(pending):
            return
        os.kill(pid, signal.SIGCONT)
    pytest.fail("never caught the writer mid-publish")


def test_sigkill_mid_publish_leaves_a_valid_snapshot_and_orphans_are_removed(shm_prefix):
    rng = random.Random(1234)
    reader = SnapshotReader(shm_prefix, KEY)
    half_written = 0
    rounds = 5
    for round_no in range(rounds):
        go = CTX.Event()
        recv, send = CTX.Pipe(duplex=False)
        writer = CTX.Process(target=publish_loop, args=(shm_prefix, go, 20.0, 512 * 1024, 4 * 1024 * 1024, send))
        writer.start()
        go.set()
        # A random number of publishes in, kill it: usually mid-write of the next version file.
        target = reader.current_version() + rng.randint(1, 4)
        deadline = time.monotonic() + 20
        while reader.current_version() < target and time.monotonic() < deadline and writer.is_alive():
            pass
        if round_no % 2:
            stop_mid_publish(writer.pid, shm_prefix, reader, deadline)
        os.kill(writer.pid, signal.SIGKILL)
        writer.join(10)
        assert writer.exitcode == -signal.SIGKILL
        current = reader.current_version()
        assert current >= target
        snapshot = reader.load()
        assert snapshot is not None and intact(current, snapshot)
        leftovers = list_versions(shm_prefix, KEY)
        if any(v > current for v in leftovers):
            half_written += 1
        # The next writer start removes every orphan, keeps current and the two before it.
        with SnapshotWriter(shm_prefix, KEY):
            kept = list_versions(shm_prefix, KEY)
        assert kept and max(kept) == current and all(current - 2 <= v for v in kept), (kept, current)
        assert reader.load().version == current
    print("\nSIGKILL rounds: %d, of which %d killed mid-publish (a newer, unpublished segment left); "
          "readers always got a valid snapshot" % (rounds, half_written))
    assert half_written >= rounds // 2  # the odd rounds, at least


def hold_writer(prefix: str, ready: Any, release: Any) -> None:
    with SnapshotWriter(prefix, KEY):
        ready.set()
        release.wait(20)


def test_second_writer_is_refused_while_the_first_lives(shm_prefix):
    ready, release = CTX.Event(), CTX.Event()
    holder = CTX.Process(target=hold_writer, args=(shm_prefix, ready, release))
    holder.start()
    try:
        assert ready.wait(20)
        with pytest.raises(WriterConflictError, match="already publishes"):
            SnapshotWriter(shm_prefix, KEY)
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # a crash, not a clean close: the pid stays in the index
        holder.join(10)
    with SnapshotWriter(shm_prefix, KEY) as writer:  # the dead pid no longer blocks
        assert writer.publish({"flags": []}) == 1


def worker_as_nobody(prefix: str, conn: Any) -> None:
    """Drop to the unprivileged uid a web worker would run as, in the files' group, and try to write."""
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
    outcome = {}
    snapshot = SnapshotReader(prefix, KEY).load()
    outcome["read_version"] = snapshot.version if snapshot else None
    for label, name in (("index", index_name(prefix, KEY)), ("data", version_name(prefix, KEY, 1))):
        try:
            posix_ipc.SharedMemory(name, flags=0).close_fd()  # O_RDWR
            outcome[label] = "opened for writing"
        except posix_ipc.PermissionsError:
            outcome[label] = "refused"
    try:
        SnapshotReader(prefix, OTHER_KEY).load()
        outcome["other_group"] = "read"
    except SnapshotPermissionError as error:
        outcome["other_group"] = "refused: may not read" if "may not read" in str(error) else str(error)
    try:
        posix_ipc.unlink_shared_memory(version_name(prefix, KEY, 1))
        outcome["unlink"] = "unlinked"
    except posix_ipc.PermissionsError:
        outcome["unlink"] = "refused"
    conn.send(outcome)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create a worker of another uid")
def test_a_worker_cannot_write_the_segments(shm_prefix):
    try:
        grp.getgrgid(65534)
    except KeyError:
        pytest.skip("no group 65534 on this host")
    with SnapshotWriter(shm_prefix, OTHER_KEY, group=0) as other:  # a group the worker is not in
        other.publish({"flags": []})
    with SnapshotWriter(shm_prefix, KEY, group=65534) as writer:
        writer.publish({"flags": [], "source": "test"})
        recv, send = CTX.Pipe(duplex=False)
        worker = CTX.Process(target=worker_as_nobody, args=(shm_prefix, send))
        worker.start()
        assert recv.poll(20)
        outcome = recv.recv()
        run_bounded([worker])
    # Readable through the group, never writable; /dev/shm is sticky, so no unlinking either.
    assert outcome == {"read_version": 1, "index": "refused", "data": "refused",
                       "other_group": "refused: may not read", "unlink": "refused"}
