"""Redis Cluster backend, measured: ``python -m bench.cluster`` (``--quick``: a smoke run).

1. **Cross-worker delivery** (``bench.rooms``'s harness, ``--pin split``): 200 receivers
   over two uvicorn workers, one publisher, closed loop, 100-byte broadcasts, alternating
   ``asgi_rt_redis`` (one redis-server) and ``asgi_rt_redis_cluster`` (3 masters) in every
   round; medians, and the cluster's ratios to single-node Redis (throughput, remote p99).
2. **Scale**: N lightweight worker processes (``bench._cluster_scale_worker``), each room
   subscribed by two of them, R rooms from 10 to 10,000, clusters of 3 and 6 masters;
   P publishes spread over the rooms. Per node, the messages it sends per publish of the
   whole cluster: deliveries to subscribed connections (counted by the workers, by the
   node each came from) plus cluster-bus publish messages (``CLUSTER INFO``
   ``cluster_stats_messages_publish*_sent``). Three designs: ``spublish`` (this
   backend), ``publish-rooms`` (plain ``PUBLISH``, a ``SUBSCRIBE`` per room on one node
   per worker) and ``publish-one`` (plain ``PUBLISH`` to one channel every worker
   subscribes to, as single-channel adapters do).
3. **Restart row** of the fault table: runs ``tests/faults/test_cluster.py`` and prints
   its row.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from asgi_rt.backends.redis_cluster import RedisClusterBackend

from ._proc import ROOT
from ._stats import med
from .rooms import RedisServer, parse_args, run_session

sys.path.insert(0, str(ROOT))
from tests._redis_cluster import RedisClusterServers


def delivery(rounds: int, broadcasts: int) -> None:
    plan = parse_args(["--rounds", str(rounds), "--broadcasts", str(broadcasts), "--pin",
                       "split", "--no-profile", "--variants", "asgi_rt_redis"])  # fmt: skip
    sessions: dict[str, list[dict[str, Any]]] = {"asgi_rt_redis": [], "asgi_rt_redis_cluster": []}
    with tempfile.TemporaryDirectory() as tmp, RedisServer(None) as redis:
        cluster = RedisClusterServers(Path(tmp))
        cluster.start()
        os.environ["BENCH_CLUSTER_URL"] = cluster.url
        try:
            for rnd in range(rounds):
                for variant, runs in sessions.items():
                    cluster.flushall()
                    session = run_session(plan, redis, None, "split", variant, rnd)
                    print(f"  round {rnd} {variant}: {session.get('msgs_per_s', 0):.0f} msgs/s "
                          f"remote p99 {session.get('b_p99_ms', 0):.1f} ms "
                          f"{session.get('error', '')} {session.get('checks', '')}")  # fmt: skip
                    runs.append(session)
        finally:
            cluster.stop()
    row = {v: {k: med([s[k] for s in runs if k in s]) for k in ("msgs_per_s", "a_p99_ms",
                                                                 "b_p99_ms")}
           for v, runs in sessions.items()}  # fmt: skip
    print("\n| backend | msgs/s | local p99 ms | remote p99 ms |\n|---|---|---|---|")
    for variant, r in row.items():
        print(f"| {variant} | {r['msgs_per_s']:.0f} | {r['a_p99_ms']:.1f} | {r['b_p99_ms']:.1f} |")
    one, many = row["asgi_rt_redis"], row["asgi_rt_redis_cluster"]
    print(f"ratio cluster / single: throughput {many['msgs_per_s'] / one['msgs_per_s']:.2f}x, "
          f"remote p99 {many['b_p99_ms'] / one['b_p99_ms']:.2f}x")  # fmt: skip


def _bus_sent(cluster: RedisClusterServers) -> dict[str, int]:
    out = {}
    for node in cluster.nodes:
        info = node.command("CLUSTER", "INFO")
        info = info.decode() if isinstance(info, bytes) else str(info)
        fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
        out[f"127.0.0.1:{node.port}"] = sum(
            int(fields.get(k, 0)) for k in ("cluster_stats_messages_publish_sent",
                                            "cluster_stats_messages_publishshard_sent")
        )  # fmt: skip
    return out


async def _publish(cluster: RedisClusterServers, mode: str, sequence: list[str]) -> None:
    async with RedisClusterBackend.from_url(cluster.url, history_size=10) as backend:
        if mode == "spublish":
            for room in sequence:
                await backend.publish(room, b"x" * 100)
            return
        clients: dict[str, aioredis.Redis] = {}
        for room in sequence:
            owner = str(backend.topology.owner(f"asgi_rt:{{{room}}}:seq"))
            if owner not in clients:
                host, _, port = owner.rpartition(":")
                clients[owner] = aioredis.Redis(host=host, port=int(port))
            channel = "bench:all" if mode == "publish-one" else room
            await clients[owner].publish(channel, b"x" * 100)
        for client in clients.values():
            await client.aclose()


def scale_run(cluster: RedisClusterServers, mode: str, workers: int, rooms: int,
              publishes: int) -> dict[str, Any]:  # fmt: skip
    names = [f"s{i}" for i in range(rooms)]
    sequence = [names[i % rooms] for i in range(publishes)]
    nodes = [f"127.0.0.1:{n.port}" for n in cluster.nodes]
    procs = []
    for w in range(workers):
        mine = [r for i, r in enumerate(names) if w in (i % workers, (i + 1) % workers)]
        expected = publishes if mode == "publish-one" else sum(r in set(mine) for r in sequence)
        cfg = {"mode": mode, "rooms": mine, "expected": expected, "node": nodes[w % len(nodes)],
               "seeds": nodes}  # fmt: skip
        procs.append(subprocess.Popen([sys.executable, "-m", "bench._cluster_scale_worker",
                                       json.dumps(cfg)], cwd=ROOT, stdout=subprocess.PIPE,
                                      text=True))  # fmt: skip
    for proc in procs:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"a {mode} worker did not get ready")
    before = _bus_sent(cluster)
    asyncio.run(_publish(cluster, mode, sequence))
    deliveries: Counter[str] = Counter()
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        deliveries.update(json.loads(out.strip().splitlines()[-1]))
    after = _bus_sent(cluster)
    per_node = {n: (deliveries[n] + after[n] - before[n]) / publishes for n in nodes}
    return {"mode": mode, "nodes": len(nodes), "workers": workers, "rooms": rooms,
            "busiest": max(per_node.values()), "total": sum(per_node.values()),
            "delivered": sum(deliveries.values())}  # fmt: skip


def scale(node_counts: list[int], worker_counts: list[int], room_counts: list[int],
          publishes: int) -> None:  # fmt: skip
    print("\n| masters | workers | rooms | design | busiest node: msgs sent per publish | "
          "all nodes | delivered |\n|---|---|---|---|---|---|---|")  # fmt: skip
    for masters in node_counts:
        with tempfile.TemporaryDirectory() as tmp:
            cluster = RedisClusterServers(Path(tmp), masters)
            cluster.start()
            try:
                for workers in worker_counts:
                    for rooms in room_counts:
                        for mode in ("spublish", "publish-rooms", "publish-one"):
                            cluster.flushall()
                            r = scale_run(cluster, mode, workers, rooms, publishes)
                            print(f"| {masters} | {workers} | {rooms} | {mode} | "
                                  f"{r['busiest']:.2f} | {r['total']:.2f} | {r['delivered']} |",
                                  flush=True)  # fmt: skip
            finally:
                cluster.stop()


def restart_row() -> None:
    result = subprocess.run([sys.executable, "-m", "pytest", "tests/faults/test_cluster.py",
                             "-q", "-s", "-p", "no:cacheprovider"], cwd=ROOT,
                            capture_output=True, text=True)  # fmt: skip
    rows = [ln for ln in result.stdout.splitlines() if ln.startswith("fault row:")]
    print("\nfault table (scenario | dups | disorder | lost | resumed | publisher told):")
    print("\n".join(rows) or result.stdout[-2000:])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", choices=["delivery", "scale", "restart"])
    a = p.parse_args(argv)
    if a.only in (None, "delivery"):
        print("cross-worker delivery, single Redis vs 3-master cluster:")
        delivery(1 if a.quick else 3, 100 if a.quick else 200)
    if a.only in (None, "scale"):
        scale([3] if a.quick else [3, 6], [2, 4], [10, 1000] if a.quick else [10, 1000, 10000],
              300 if a.quick else 1000)  # fmt: skip
    if a.only in (None, "restart"):
        restart_row()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
