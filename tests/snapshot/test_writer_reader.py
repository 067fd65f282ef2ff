"""The segment layout, writer and reader in one process (multi-process behaviour: test_processes.py)."""

import mmap
import os
import pwd
import time
import zlib

import posix_ipc
import psutil
import pytest

from amplitude_experiment.evaluation import plan_flags
from amplitude_experiment import snapshot
from amplitude_experiment.snapshot.layout import HEADER, encode_version
from amplitude_experiment.snapshot import (
    INDEX_SIZE,
    RETIRED,
    W_VERSION,
    SnapshotCorruptError,
    SnapshotPermissionError,
    SnapshotReader,
    SnapshotWriter,
    version_name,
    index_name,
    key_hash,
    list_versions,
    remove_all,
)

KEY = "server-abcdefghijklmnopqrstuvwxyz012345"


def document(n: int = 0, size: int = 16) -> dict:
    return {"flags": [{"key": "f%d" % n, "variants": {}, "segments": []}], "source": "file:/tmp/flags.json", "fetched_at_ns": 1000 + n,
            "flag_count": 1, "blob": bytes([n % 256]) * size}


def shm_path(name: str) -> str:
    return "/dev/shm/" + name.lstrip("/")


@pytest.fixture
def writer(shm_prefix):
    with SnapshotWriter(shm_prefix, KEY, poll_interval_ms=2000) as w:
        yield w


def test_names_hide_the_key(shm_prefix):
    assert key_hash(KEY) == key_hash(KEY) != key_hash(KEY + "x")
    assert len(key_hash(KEY)) == 16
    name = index_name(shm_prefix, KEY)
    assert name == "/%s.%s.idx" % (shm_prefix, key_hash(KEY))
    assert KEY not in name and KEY not in version_name(shm_prefix, KEY, 7)


def test_key_never_appears_in_segments(shm_prefix, writer):
    writer.publish(document(1))
    for version in [0] + list_versions(shm_prefix, KEY):
        name = index_name(shm_prefix, KEY) if version == 0 else version_name(shm_prefix, KEY, version)
        with open(shm_path(name), "rb") as handle:
            assert KEY.encode() not in handle.read()


def test_publish_then_load_round_trips(shm_prefix, writer):
    reader = SnapshotReader(shm_prefix, KEY)
    assert reader.current_version() == 0 and reader.load() is None
    version = writer.publish(document(1))
    assert version == 1 and reader.current_version() == 1
    snapshot = reader.load()
    assert snapshot.version == 1 and snapshot.document == document(1)
    assert reader.load() is snapshot  # decoded once per version
    assert writer.publish(document(2)) == 2
    assert reader.load().document == document(2)


def test_reader_before_any_index_reports_nothing(shm_prefix):
    reader = SnapshotReader(shm_prefix, KEY)
    assert not reader.attach()
    assert reader.current_version() == 0 and reader.load() is None
    assert reader.state().version == 0
    assert not os.path.exists(shm_path(index_name(shm_prefix, KEY)))  # readers never create


def test_index_records_publisher_and_times(shm_prefix):
    clock = iter(range(10_000, 20_000, 100))
    with SnapshotWriter(shm_prefix, KEY, poll_interval_ms=1500, clock_ns=lambda: next(clock)) as writer:
        writer.publish(document(3))
        writer.heartbeat(fetched_at_ns=777)
        reader = SnapshotReader(shm_prefix, KEY)
        state = reader.state()
    assert state.version == 1
    assert state.publisher_pid == os.getpid()
    assert reader.state().publisher_pid == 0  # a clean close clears the pid: nobody publishes any more
    assert state.published_at_ns == 10_100
    assert state.heartbeat_ns == 10_200
    assert state.last_fetch_ns == 777
    assert state.poll_interval_ms == 1500


def test_live_writer_state_and_liveness(shm_prefix, writer):
    writer.publish(dict(document(1), poll_interval_ms=4000))
    state = SnapshotReader(shm_prefix, KEY).state()
    assert state.publisher_pid == os.getpid()
    assert state.publisher_start_ns > 0 and state.poll_interval_ms == 4000
    assert snapshot.publisher_alive(state) is True
    state.publisher_start_ns -= 3600 * 10 ** 9  # same pid, different start: a reused pid
    assert snapshot.publisher_alive(state) is False


def test_segments_are_0640_and_take_the_group(shm_prefix):
    old = os.umask(0)
    try:
        gid = os.getgid()
        with SnapshotWriter(shm_prefix, KEY, group=gid) as writer:
            writer.publish(document(1))
    finally:
        os.umask(old)
    for name in (index_name(shm_prefix, KEY), version_name(shm_prefix, KEY, 1)):
        stat = os.stat(shm_path(name))
        assert stat.st_mode & 0o777 == 0o640 and stat.st_gid == gid


def test_keeps_current_and_two_previous_versions(shm_prefix, writer):
    for n in range(1, 8):
        writer.publish(document(n))
    assert list_versions(shm_prefix, KEY) == [5, 6, 7]


def test_restart_continues_numbering_and_removes_orphans(shm_prefix, writer):
    for n in range(1, 6):
        writer.publish(document(n))
    writer.close()
    # A crashed predecessor: a half-written v6 never published, and an ancient v1 it failed to unlink.
    for version in (1, 6):
        shm = posix_ipc.SharedMemory(version_name(shm_prefix, KEY, version), posix_ipc.O_CREX, mode=0o640, size=100)
        shm.close_fd()
    assert list_versions(shm_prefix, KEY) == [1, 3, 4, 5, 6]
    with SnapshotWriter(shm_prefix, KEY) as restarted:
        assert list_versions(shm_prefix, KEY) == [3, 4, 5]
        assert restarted.publish(document(9)) == 7  # 6 was seen: numbers are never reused
    assert SnapshotReader(shm_prefix, KEY).load().document == document(9)


def test_squatted_version_is_skipped(shm_prefix, writer):
    writer.publish(document(1))
    shm = posix_ipc.SharedMemory(version_name(shm_prefix, KEY, 2), posix_ipc.O_CREX, mode=0o644, size=64)
    shm.close_fd()
    assert writer.publish(document(2)) == 3
    assert SnapshotReader(shm_prefix, KEY).load().version == 3


@pytest.mark.parametrize("size", [0, 1, 4096 - HEADER.size, 4096, 3 * 1024 * 1024 + 7])
def test_payloads_of_any_size(shm_prefix, writer, size):
    writer.publish(document(5, size=size))
    assert SnapshotReader(shm_prefix, KEY).load().document["blob"] == bytes([5]) * size


def test_reader_maps_read_only(shm_prefix, writer):
    writer.publish(document(1))
    reader = SnapshotReader(shm_prefix, KEY)
    assert reader.current_version() == 1
    with pytest.raises(TypeError):
        reader.words[W_VERSION] = 99
    mm, _ = reader._map(version_name(shm_prefix, KEY, 1))
    with pytest.raises(TypeError):
        mm[0:1] = b"x"
    # The fd a reader gets is O_RDONLY: the MMU refuses a writable mapping too.
    shm = posix_ipc.SharedMemory(version_name(shm_prefix, KEY, 1), flags=0, read_only=True)
    try:
        with pytest.raises(PermissionError):
            mmap.mmap(shm.fd, 64)
    finally:
        shm.close_fd()


@pytest.mark.parametrize("mode", [0o660, 0o666, 0o642])
def test_reader_refuses_segments_others_can_write(shm_prefix, writer, mode):
    writer.publish(document(1))
    os.chmod(shm_path(index_name(shm_prefix, KEY)), mode)
    with pytest.raises(SnapshotPermissionError, match="group or others can write"):
        SnapshotReader(shm_prefix, KEY).attach()
    os.chmod(shm_path(index_name(shm_prefix, KEY)), 0o640)
    os.chmod(shm_path(version_name(shm_prefix, KEY, 1)), mode)
    with pytest.raises(SnapshotPermissionError):
        SnapshotReader(shm_prefix, KEY).load()


def test_reader_checks_the_configured_owner(shm_prefix, writer):
    writer.publish(document(1))
    me = os.geteuid()
    assert SnapshotReader(shm_prefix, KEY, owner=me).load().version == 1
    assert SnapshotReader(shm_prefix, KEY, owner=pwd.getpwuid(me).pw_name).load().version == 1
    # Its own uid (and root) a reader always trusts; other owners: tests/snapshot/test_hostile.py.
    assert SnapshotReader(shm_prefix, KEY, owner=me + 4242).load().version == 1
    with pytest.raises(SnapshotPermissionError, match="not a known user"):
        SnapshotReader(shm_prefix, KEY, owner="no-such-user-here").attach()


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_reader_refuses_data_owned_by_someone_else_than_the_index(shm_prefix, writer):
    writer.publish(document(1))
    os.chown(shm_path(version_name(shm_prefix, KEY, 1)), 65534, -1)
    with pytest.raises(SnapshotPermissionError, match="the index by uid"):
        SnapshotReader(shm_prefix, KEY, owner=65534).load()  # a trusted owner, but not the index's


def forge(shm_prefix: str, version: int, n: int = 2, tamper=None, **overrides) -> None:
    """Write a version file by hand (as a buggy or hostile writer would) and point the index at it.

    ``overrides`` replace header fields; ``tamper(bytearray)`` changes the bytes after the header.
    """
    image = encode_version(plan_flags(document(n)["flags"]), {"source": "forged"})
    fields = dict(zip(("magic", "fmt", "flag_count", "stored_version", "length", "created", "directory_length",
                       "directory_crc", "meta_length", "order_count", "sequence_total", "reserved"),
                      HEADER.unpack(image.header(version, 1))))
    fields.update(overrides)
    body = bytearray(image.body)
    if tamper is not None:
        tamper(body)
    shm = posix_ipc.SharedMemory(version_name(shm_prefix, KEY, version), posix_ipc.O_CREX, mode=0o640,
                                 size=HEADER.size + len(body))
    os.fchmod(shm.fd, 0o640)
    with mmap.mmap(shm.fd, HEADER.size + len(body)) as mm:
        mm[HEADER.size:] = bytes(body)
        HEADER.pack_into(mm, 0, *fields.values())
    shm.close_fd()
    store_version_word(shm_prefix, version)


def store_version_word(shm_prefix: str, version: int) -> None:
    """Store ``version`` into the index's version word by hand, as only a writer would."""
    index = posix_ipc.SharedMemory(index_name(shm_prefix, KEY), flags=0)
    with mmap.mmap(index.fd, INDEX_SIZE) as mm:
        view = memoryview(mm).cast("Q")
        view[W_VERSION] = version
        view.release()
    index.close_fd()


@pytest.mark.parametrize("override, message", [
    ({"magic": b"XXXXXXXX"}, "magic"),
    ({"magic": b"AMPFSNP1"}, "format-1 version file; this SDK reads format 2"),
    ({"fmt": 9}, "format 9"),
    ({"stored_version": 3}, "says version 3"),
    ({"length": 5}, "says it is 5 bytes"),
    ({"directory_crc": 1}, "checksum"),
    ({"directory_length": 1 << 30}, "does not fit"),
])
def test_reader_rejects_a_bad_segment_and_keeps_nothing_half_read(shm_prefix, writer, override, message):
    writer.publish(document(1))
    reader = SnapshotReader(shm_prefix, KEY)
    assert reader.load().version == 1
    forge(shm_prefix, 2, **override)
    with pytest.raises(SnapshotCorruptError, match=message):
        reader.load()


def test_meta_that_is_not_a_map_is_rejected(shm_prefix, writer):
    import msgpack

    writer.publish(document(1))
    meta = msgpack.packb([1, 2])

    def tamper(body):
        body[0:len(meta)] = meta

    forge(shm_prefix, 2, tamper=tamper, meta_length=len(meta),
          directory_crc=zlib.crc32(_tampered_directory(tamper)))
    with pytest.raises(SnapshotCorruptError, match="expected a map"):
        SnapshotReader(shm_prefix, KEY).load()


def _tampered_directory(tamper) -> bytes:
    image = encode_version(plan_flags(document(2)["flags"]), {"source": "forged"})
    body = bytearray(image.body)
    tamper(body)
    return bytes(body[:image.directory_length])


def test_a_record_that_fails_its_digest_is_refused_when_decoded(shm_prefix, writer):
    writer.publish(document(1))

    def tamper(body):
        body[-2] ^= 0xFF  # inside the last (only) record, outside the checksummed directory

    forge(shm_prefix, 2, tamper=tamper)
    table = SnapshotReader(shm_prefix, KEY).load()
    assert table.version == 2 and table.keys() == ["f2"]  # the directory is intact
    with pytest.raises(ValueError, match="fails its digest"):
        table.config("f2")


def test_vanished_version_keeps_the_previous_snapshot(shm_prefix, writer):
    writer.publish(document(1))
    reader = SnapshotReader(shm_prefix, KEY)
    first = reader.load()
    writer.publish(document(2))
    posix_ipc.unlink_shared_memory(version_name(shm_prefix, KEY, 2))  # as if unlinked before we opened it
    assert reader.load() is first
    assert reader.retries == snapshot.OPEN_ATTEMPTS


def test_remove_all_retires_the_index_for_mapped_readers(shm_prefix, writer):
    writer.publish(document(1))
    reader = SnapshotReader(shm_prefix, KEY)
    assert reader.load().version == 1
    writer.close()
    remove_all(shm_prefix, KEY)
    assert reader.words[W_VERSION] == RETIRED  # the old mapping says so; the name is gone
    assert not [n for n in os.listdir("/dev/shm") if n.startswith(shm_prefix)]
    assert reader.load() is None
    with SnapshotWriter(shm_prefix, KEY) as again:
        again.publish(document(4))
    assert reader.load().document == document(4)


def test_writer_refuses_an_index_owned_by_someone_else(shm_prefix):
    if os.geteuid() != 0:
        pytest.skip("chown needs root")
    with SnapshotWriter(shm_prefix, KEY):
        pass
    os.chown(shm_path(index_name(shm_prefix, KEY)), 65534, -1)
    with pytest.raises(snapshot.WriterConflictError, match="belongs to uid"):
        SnapshotWriter(shm_prefix, KEY)


def test_full_shared_memory_fails_the_publish_not_the_process(shm_prefix, writer, monkeypatch):
    import errno

    writer.publish(document(1))

    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    with pytest.raises(snapshot.SnapshotError, match="no room"):
        writer.publish(document(2))
    assert list_versions(shm_prefix, KEY) == [1]
    assert SnapshotReader(shm_prefix, KEY).load().version == 1
    monkeypatch.undo()
    assert writer.publish(document(3)) == 3  # the failed number is not reused


def test_an_interrupted_remove_all_is_recovered(shm_prefix, writer):
    writer.publish(document(1))
    writer.close()
    store_version_word(shm_prefix, RETIRED)
    with SnapshotWriter(shm_prefix, KEY) as again:
        assert again.version == 0
        assert again.publish(document(2)) == 2
    assert SnapshotReader(shm_prefix, KEY).load().document == document(2)


@pytest.mark.multiprocess
def test_a_killed_unreaped_writer_does_not_block_the_next(shm_prefix):
    pid = os.fork()
    if pid == 0:
        try:
            SnapshotWriter(shm_prefix, KEY).publish(document(1))
        finally:
            os._exit(0)  # no close(): the pid stays in the index, and nobody reaps us for a while
    try:
        deadline = time.monotonic() + 20
        while psutil.Process(pid).status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
            pass
        assert psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        assert SnapshotReader(shm_prefix, KEY).state().publisher_pid == pid
        with SnapshotWriter(shm_prefix, KEY) as writer:
            assert writer.publish(document(2)) == 2
    finally:
        os.waitpid(pid, 0)


def test_an_index_being_created_reads_as_not_published_yet(shm_prefix):
    # shm_open(O_CREAT) and ftruncate are two steps: a reader may see the name at size 0.
    shm = posix_ipc.SharedMemory(index_name(shm_prefix, KEY), posix_ipc.O_CREX, mode=0o640)
    shm.close_fd()
    reader = SnapshotReader(shm_prefix, KEY)
    assert reader.attach() is False and reader.load() is None
    with SnapshotWriter(shm_prefix, KEY) as writer:  # a writer that died right there is taken over
        writer.publish(document(1))
    assert reader.load().version == 1


def test_a_closed_writer_raises_a_typed_error(shm_prefix):
    writer = SnapshotWriter(shm_prefix, KEY)
    writer.close()
    writer.close()  # idempotent
    with pytest.raises(snapshot.SnapshotError, match="closed"):
        writer.publish(document(1))
    with pytest.raises(snapshot.SnapshotError, match="closed"):
        writer.heartbeat()
