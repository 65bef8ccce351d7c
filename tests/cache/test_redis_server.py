"""The real-Redis test helper itself: starts, answers, dies, comes back on the same port."""

from __future__ import annotations

import pytest
import redis

from tests.support.redis_server import RedisServer


def test_kill_and_restart_keep_the_port_and_start_empty():
    with RedisServer() as server:
        client = server.client()
        client.set("k", "v")
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}
        port = server.port
        server.kill()
        assert not server.running
        with pytest.raises(redis.ConnectionError):
            client.ping()
        server.start()
        assert server.port == port and server.running
        assert client.get("k") is None  # no persistence: a restart is a cold Redis
        server.stop()
        assert not server.running
        client.close()


def test_extra_args_reach_the_server():
    with RedisServer("--maxmemory", "10mb", "--maxmemory-policy", "allkeys-lru") as server:
        client = server.client()
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "allkeys-lru"}
        client.close()
