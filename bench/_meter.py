"""What a client process measures while it drives a server: CPU, from /proc, as cores."""

from __future__ import annotations

import os
import resource
import time

from ._wsclient import Reactor


def process_cpu_s(pid: int) -> float:
    """utime + stime of ``pid`` in seconds (from /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float:
    """CPU seconds all cores spent busy since boot (from /proc/stat)."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq = map(int, f.readline().split()[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


class Meter:
    """CPU use from here to :meth:`stop`: this process, the server ``pid``, everyone else.

    Also ``events_per_poll`` of ``reactor``: about 1 means the client keeps up with the
    server (see ``bench.fanout``).
    """

    def __init__(self, reactor: Reactor, pid: int) -> None:
        self.reactor = reactor
        self.pid = pid
        self.cpu, self.srv, self.busy = time.process_time(), process_cpu_s(pid), machine_busy_s()
        self.sys = resource.getrusage(resource.RUSAGE_SELF).ru_stime
        self.polls, self.events = reactor.polls, reactor.events

    def stop(self, seconds: float) -> dict[str, float]:
        """Cores used over ``seconds`` (the stretch's wall time)."""
        cpu = time.process_time() - self.cpu
        srv = process_cpu_s(self.pid) - self.srv
        busy = machine_busy_s() - self.busy
        sys_ = resource.getrusage(resource.RUSAGE_SELF).ru_stime - self.sys
        polls, events = self.reactor.polls - self.polls, self.reactor.events - self.events
        return {
            "client_cpu": cpu / seconds,
            "client_sys": sys_ / seconds,
            "server_cpu": srv / seconds,
            "other_cpu": (busy - cpu - srv) / seconds,
            "events_per_poll": events / max(1, polls),
        }
