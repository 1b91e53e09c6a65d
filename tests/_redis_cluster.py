"""A real 3-master Redis Cluster for the tests: three ``redis-server --cluster-enabled yes``
on free loopback ports, joined by ``redis-cli --cluster create`` (no replicas).

A node restarted on its port keeps its cluster identity and slots (its ``nodes.conf``
stays in its directory) and loses its data, as a crashed node without persistence does.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from ._poll import wait_for
from ._redis import RedisServer
from ._system import free_port, require_binary

__all__ = ["RedisClusterServers"]

NODE_TIMEOUT_MS = 2000  # how long until the others mark a silent master failed


class RedisClusterServers:
    def __init__(self, workdir: Path, masters: int = 3) -> None:
        self.cli = require_binary("redis-cli", "redis-tools")
        self.nodes: list[RedisServer] = []
        for i in range(masters):
            (workdir / f"node{i}").mkdir()
            self.nodes.append(RedisServer(
                workdir / f"node{i}", "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                "--cluster-port", str(free_port()),  # not port + 10000: may be taken or > 65535
            ))  # fmt: skip

    @property
    def url(self) -> str:
        return "redis-cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        addrs = [f"127.0.0.1:{n.port}" for n in self.nodes]
        subprocess.run([self.cli, "--cluster", "create", *addrs, "--cluster-replicas", "0",
                        "--cluster-yes"], check=True, capture_output=True, timeout=60)  # fmt: skip
        self.wait_ok()

    def wait_ok(self, timeout: float = 30) -> None:
        """Until every node says ``cluster_state:ok`` and knows every slot's owner."""
        wait_for(lambda: all(self._ok(n) for n in self.nodes), timeout, "cluster_state:ok")

    def _ok(self, node: RedisServer) -> bool:
        try:
            info = node.command("CLUSTER", "INFO")
        except Exception:  # a node still starting
            return False
        info = info.decode() if isinstance(info, bytes) else str(info)
        return "cluster_state:ok" in info and "cluster_slots_ok:16384" in info

    def owner_of(self, key: str) -> RedisServer:
        """The node that owns ``key``'s slot (MOVED names it; its own node answers)."""
        slot = int(self.nodes[0].command("CLUSTER", "KEYSLOT", key))
        for start, end, primary, *_ in self.nodes[0].command("CLUSTER", "SLOTS"):
            if int(start) <= slot <= int(end):
                return next(n for n in self.nodes if n.port == int(primary[1]))
        raise AssertionError(f"no node owns slot {slot}")

    def flushall(self) -> None:
        for node in self.nodes:
            node.command("FLUSHALL")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
