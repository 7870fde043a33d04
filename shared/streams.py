"""JetStream streams the system relies on; created idempotently by whoever starts first."""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from probefleet.shared import subjects

# Duplicate window for Nats-Msg-Id: a probe that republishes a result after a
# reconnect within this window is not stored twice by the stream.
DUPLICATE_WINDOW_S = 120.0


async def ensure_streams(js: JetStreamContext, *, max_bytes: int = 512 << 20, replicas: int = 1) -> None:
    """Create or update the results and pings streams (work-queue retention) with `replicas`
    copies on a NATS cluster (1 on a single server). An update changes the replica count of
    an existing stream too; the durable consumers follow their stream's."""
    for name, subject in (
        (subjects.RESULTS_STREAM, subjects.results_all()),
        (subjects.PINGS_STREAM, subjects.pings()),
    ):
        config = StreamConfig(
            name=name,
            subjects=[subject],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            max_bytes=max_bytes,
            duplicate_window=DUPLICATE_WINDOW_S,
            num_replicas=replicas,
        )
        try:
            await js.stream_info(name)
        except NotFoundError:
            await js.add_stream(config)
        else:
            await js.update_stream(config)
