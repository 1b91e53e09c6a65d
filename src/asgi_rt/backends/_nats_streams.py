"""What NatsBackend keeps in JetStream: the two streams, the headers of a room's messages,
room names as subject tokens, and reading every kept message of a subject."""

from __future__ import annotations

import base64
import uuid

from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

__all__ = ["EPOCH", "SEQ", "read_all", "stream_configs", "token", "untoken"]

SEQ, EPOCH = "Asgi-Rt-Seq", "Asgi-Rt-Epoch"  # a room's numbering, in each of its messages


def stream_configs(
    prefix: str, *, history_size: int, room_ttl: float, idempotency_ttl: float
) -> tuple[api.StreamConfig, api.StreamConfig]:
    """The rooms' stream (``<prefix>.in.<room>``, republished in order to
    ``<prefix>.live.<room>`` once stored) and the presence stream (one subject per member)."""
    rooms = api.StreamConfig(
        name=f"{prefix}_rooms", subjects=[f"{prefix}.in.>"], max_age=room_ttl,
        max_msgs_per_subject=max(1, history_size),  # the last one holds the numbering
        duplicate_window=idempotency_ttl, storage=api.StorageType.FILE,
        republish=api.RePublish(src=f"{prefix}.in.>", dest=f"{prefix}.live.>"),
        allow_direct=True,
    )  # fmt: skip
    presence = api.StreamConfig(
        name=f"{prefix}_presence", subjects=[f"{prefix}.presence.>"], max_age=room_ttl,
        max_msgs_per_subject=1, storage=api.StorageType.FILE,
    )  # fmt: skip
    return rooms, presence


async def read_all(
    js: JetStreamContext, stream: str, subject: str, policy: api.DeliverPolicy
) -> list[Msg]:
    """Every kept message on ``subject``: an ephemeral pull consumer without acks, which
    says up front how many there are, so reading never waits for a fetch to time out."""
    config = api.ConsumerConfig(
        name=f"h{uuid.uuid4().hex}", filter_subject=subject, deliver_policy=policy,
        ack_policy=api.AckPolicy.NONE, inactive_threshold=10.0, mem_storage=True,
        num_replicas=1,
    )  # fmt: skip
    info = await js.add_consumer(stream, config)
    pending, out = int(info.num_pending or 0), list[Msg]()
    if pending:
        sub = await js.pull_subscribe_bind(stream=stream, consumer=config.name)
        try:
            while len(out) < pending:
                out += await sub.fetch(min(256, pending - len(out)), timeout=5)
        finally:
            await sub.unsubscribe()
    await js.delete_consumer(stream, str(config.name))
    return out


def token(name: str) -> str:
    """A room or member name as one subject token: any text, no '.', '*', '>' or space."""
    return "_" + base64.urlsafe_b64encode(name.encode()).decode().rstrip("=")


def untoken(value: str) -> str:
    raw = value[1:]
    return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
