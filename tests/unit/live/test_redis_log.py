"""The live log as a Redis stream (when Redis is configured): the same contract as the SQLite log, on a real server."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
import redis

from models.live.ingest import read_live_log
from models.live.log import EVENT, ITEM, RedisStreamLog, open_log
from models.settings import Settings


def test_batches_get_consecutive_sequence_numbers_and_every_reader_sees_them(redis_server):
    url, _ = redis_server
    writer, reader = RedisStreamLog(url, "demo"), RedisStreamLog(url, "demo")
    assert writer.append(EVENT, [{"n": 1}, {"n": 2}]) == [1, 2]
    assert writer.append(ITEM, [{"n": 3}]) == [3]
    records = reader.read_after(0)
    assert [(r.seq, r.kind, r.body["n"]) for r in records] == [(1, EVENT, 1), (2, EVENT, 2), (3, ITEM, 3)]
    assert [r.seq for r in reader.read_after(2)] == [3] and reader.read_after(3) == []
    assert [r.seq for r in reader.read_after(0, limit=2)] == [1, 2]
    assert reader.last_seq() == 3
    assert RedisStreamLog(url, "other").read_after(0) == [], "each dataset has its own stream"
    with pytest.raises(ValueError, match="unknown log record kind"):
        writer.append("gossip", [{"n": 4}])


def test_settings_with_redis_put_the_log_there(redis_server, tmp_path: Path):
    url, _ = redis_server
    settings = Settings(state_dir=tmp_path / "state", online_store="redis", redis_url=url)
    log = open_log(settings, "demo")
    assert isinstance(log, RedisStreamLog)
    log.append(EVENT, [{"user_id": "u1"}])
    assert [r.body for r in read_live_log(settings, "demo")] == [{"user_id": "u1"}]
    assert not (tmp_path / "state" / "live").exists(), "nothing is written to the SQLite log then"


def test_an_acknowledged_batch_survives_a_redis_crash_with_fsync_always(tmp_path: Path):
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    port = 6390 + (time.time_ns() // 1000) % 500
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
               "--appendfsync", "always", "--dir", str(tmp_path)]  # fmt: skip

    def start() -> subprocess.Popen:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(host="127.0.0.1", port=port)
        for _ in range(100):
            try:
                client.ping()
                return process
            except redis.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError("redis-server did not start")

    process = start()
    try:
        RedisStreamLog(f"127.0.0.1:{port}", "demo").append(EVENT, [{"n": n} for n in range(50)])
        process.kill()  # no shutdown save: only the append-only file holds the batch
        process.wait(timeout=10)
        process = start()
        assert [r.body["n"] for r in RedisStreamLog(f"127.0.0.1:{port}", "demo").read_after(0)] == list(range(50))
    finally:
        process.kill()
        process.wait(timeout=10)
