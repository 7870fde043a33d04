"""The probe agent: takes its region's jobs from NATS, runs checks, publishes results.

The loop bodies are steps tests call directly: `handle_job(job)` turns one job into
one result, `publish_one(result)` gets one result acknowledged by JetStream and
`publish_batch(results)` several in one message.

Results of jobs that allow it (`CheckJob.batch_results`) go to JetStream in batches: a
publisher takes the first ready result and those that become ready within `result_linger`
(`_collect`), so one stream write, one acknowledgement and one delivery carry many results.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import socket
import ssl
import time
from collections import Counter, deque
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import msgspec
import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext

from probefleet.probe.checkers import CHECKERS, HOST_CHECKS, REQUIRES, Checker, capabilities, dns, http
from probefleet.probe.checkers.base import Outcome, timeout
from probefleet.probe.config import ProbeConfig
from probefleet.probe.metrics import ProbeMetrics, series_for
from probefleet.shared import natscreds, subjects, wire
from probefleet.shared.natscreds import NatsRefusedError
from probefleet.shared.version import VERSION
from probefleet.shared.wire import CheckJob, CheckResult, Reason, Status

if TYPE_CHECKING:
    from probefleet.probe.otel import CheckTelemetry

log = logging.getLogger("probefleet.probe")

_PUBLISH_TIMEOUT = 2.0
_RETRY_MAX = 2.0
# A batch message stays under this many bytes (and under half the server's max_payload,
# 1 MiB by default): a few hundred ordinary results (about 150 bytes each) fit many times
# over, and one result with large details still leaves room for the others.
_BATCH_BYTES = 256 * 1024
# "Authorization Violation" this many times in a row (each reconnect attempt is one) ends the
# probe: once could be a server that restarted before it loaded the account, but a credential
# the server keeps refusing will not be taken by retrying.
_AUTH_FAILURES_FATAL = 3


# `probe run`'s exit status when NATS refused the probe for good (sysexits' EX_CONFIG): a
# supervisor should not restart it (systemd RestartPreventExitStatus=78), since a revoked
# or foreign credential stays refused.
EXIT_REFUSED = 78

# Added to the wait of a job held for its due time. uvloop (libuv) counts timers in whole
# milliseconds from the time it read at the start of the loop's iteration, so a timer runs
# up to about 1 ms early, and a job not due yet is held again. Measured with uvloop, 300
# timers due over a second: without the pad 7,007 early runs in all (a spin to each due
# time), with it none, and the timers ran a median 1.6 ms after their due time (a busy
# 2-core machine).
_HOLD_PAD = 0.001

# The kinds a probe also takes on their own subjects (subjects.jobs_kind) when it can run
# them: those whose library or host support may be missing, so a region's probes can differ
# in them. The others every probe runs: they stay on the region subject alone.
KIND_SUBJECT_KINDS = frozenset(REQUIRES) | frozenset(HOST_CHECKS)


def refusal(exc: BaseException) -> tuple[str, bool] | None:
    """(why, at once) when `exc` means NATS does not accept this probe, else None. `at once`:
    fatal on the first sight; otherwise after _AUTH_FAILURES_FATAL in a row."""
    text = str(exc).lower()
    if "authentication revoked" in text:
        return "NATS says this probe's credential was revoked; enroll it again to rejoin", True
    if "authentication expired" in text:
        return "NATS says this probe's credential has expired; enroll it again to rejoin", True
    if isinstance(exc, nats.errors.AuthorizationError) or "authorization violation" in text:
        return (
            "NATS refused this probe's credential (authorization violation): it is missing, revoked, "
            "or from another fleet",
            False,
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"the NATS server's TLS certificate is not trusted ({exc.verify_message}): set nats_tls_ca "
            "(PROBEFLEET_NATS_TLS_CA) to the fleet's CA",
            True,
        )
    if "tls required" in text:
        return "the NATS server requires TLS: use a tls:// URL", True
    return None


class _Ready(NamedTuple):
    """A result waiting for a publisher, encoded once, with what its job allows."""

    result: CheckResult
    data: bytes
    # The job allowed its result to go in a batch (CheckJob.batch_results).
    batch: bool
    # Unix time past which the result must not wait for others: its job's deadline less the
    # margin, the time a check itself must be done by.
    hold_until: float


class _Slots:
    """The checks that may run at once: asyncio.Semaphore's behaviour (first come, first
    served) with the common case, a free slot, taken inline by the caller (`free -= 1`)
    without a coroutine or a scan of the waiters (Semaphore.acquire's `locked()`)."""

    def __init__(self, n: int) -> None:
        self.free = n
        self.waiting: deque[asyncio.Future[None]] = deque()

    async def wait(self) -> None:
        """Take a slot, waiting for one when none is free (or others wait before us)."""
        if self.free > 0 and not self.waiting:
            self.free -= 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self.waiting.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot as the cancel came: pass it on
            else:
                with contextlib.suppress(ValueError):  # `release` may have dropped it already
                    self.waiting.remove(waiter)
            raise

    def release(self) -> None:
        """Give a slot back: to the first waiter, else to the free ones."""
        while self.waiting:
            waiter = self.waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.free += 1


class Agent:
    def __init__(
        self,
        config: ProbeConfig,
        *,
        checkers: Mapping[str, Checker] = CHECKERS,
        metrics: ProbeMetrics | None = None,
    ) -> None:
        self.config = config
        self.checkers = checkers
        self.metrics = metrics or ProbeMetrics(series_for(config))
        self.telemetry = _telemetry(config, self.metrics)
        self.started_at = time.time()
        self.checks_total = 0
        self.nc: Client | None = None
        self.js: JetStreamContext | None = None
        self._sub: Subscription | None = None
        # Kind -> its subscription on the kind subject, those NATS accepted (`_take_kinds`).
        self._kind_subs: dict[str, Subscription] = {}
        # Subjects NATS refused this probe a subscription to (a permissions violation), and
        # whether `_take_kinds` is done (a refusal after it is dropped as it comes).
        self._refused_subjects: set[str] = set()
        self._kinds_taken = False
        self._slots = _Slots(config.concurrency)
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._results: asyncio.Queue[_Ready] = asyncio.Queue(config.publish_buffer)
        # One publisher at a time gathers the next message's results (`_collect`); the
        # others meanwhile wait for their acknowledgements, so a slow one stalls no other.
        self._collecting = asyncio.Lock()
        # Due times of the jobs taken whose results JetStream has not acknowledged yet
        # (a count per due time), for the heartbeat's `unacked_since`.
        self._unacked: Counter[float] = Counter()
        # Jobs received ahead of their due time, each waiting for its timer (`_hold`), by key.
        self._held: dict[int, tuple[asyncio.TimerHandle, CheckJob]] = {}
        self._held_keys = 0
        # (due, key) of the held jobs, a heap: the next one due first (entries of jobs no
        # longer held are dropped as they come to the top: `_next_held_due`).
        self._held_dues: list[tuple[float, int]] = []
        # Jobs started (`_start`) whose check has not ended yet, running or waiting for a slot.
        self._running = 0
        self._none_held = asyncio.Event()
        self._none_held.set()
        self._background: list[asyncio.Task[None]] = []
        self._stopping = False
        self._draining = False
        # Set when NATS refused this probe for good (`refused_reason` says why).
        self.refused = asyncio.Event()
        self.refused_reason = ""
        self._auth_failures = 0
        self._connecting: asyncio.Task[Client] | None = None
        self.host = socket.gethostname()
        self.capabilities = capabilities(checkers)
        # Read at scrape time: an inc() and a dec() per check took a lock each.
        self.metrics.in_flight.set_function(lambda: self._in_flight)

    # ------------------------------------------------------------ lifecycle

    @property
    def healthy(self) -> bool:
        """Connected to NATS and subscribed to the region's jobs (the probe's /healthz)."""
        return self._sub is not None and self.nc is not None and self.nc.is_connected

    @property
    def ready(self) -> bool:
        """Healthy and not draining for a stop (the probe's /readyz)."""
        return self.healthy and not self._draining

    async def start(self) -> None:
        self.nc = await self._connect()
        self.js = self.nc.jetstream()
        self._sub = await self.nc.subscribe(
            subjects.jobs(self.config.region),
            queue=subjects.jobs_queue(self.config.region),
            cb=self._on_message,
            pending_msgs_limit=-1,
            pending_bytes_limit=-1,
        )
        await self._take_kinds()
        self._background += [asyncio.create_task(self._publisher()) for _ in range(self.config.publishers)]
        self._background.append(asyncio.create_task(self._heartbeats()))
        log.info("probe started probe_id=%s region=%s", self.config.probe_id, self.config.region)

    async def _take_kinds(self) -> None:
        """Subscribe to the kind subject of each kind of KIND_SUBJECT_KINDS this probe can
        run, in the region's queue group, and keep those NATS accepts: a credential issued
        before kind subjects allows the region subject only. The heartbeat lists the kinds
        kept (`kind_subjects`); the controller sends a mixed region's kind to its kind
        subject only while every able probe there lists it, else to the region subject."""
        assert self.nc is not None
        region = self.config.region
        for kind in sorted(KIND_SUBJECT_KINDS.intersection(self.capabilities)):
            self._kind_subs[kind] = await self.nc.subscribe(
                subjects.jobs_kind(region, kind),
                queue=subjects.jobs_queue(region),
                cb=self._on_message,
                pending_msgs_limit=-1,
                pending_bytes_limit=-1,
            )
        # A round trip, so the server holds the subscriptions once start() returns (a job
        # published right after, from another connection, is not missed) and has refused
        # those it refuses: its -ERR comes before the PONG, and error_cb runs as it is read.
        # Twice: nats-py writes a flush's PING at once, ahead of the SUBs its flusher task
        # has not written yet; the second PING follows them.
        await self.nc.flush()
        await self.nc.flush()
        self._kinds_taken = True
        refused = [k for k, sub in self._kind_subs.items() if sub.subject in self._refused_subjects]
        for kind in refused:
            self._drop_kind(kind)
        if refused:
            log.warning(
                "nats refused the kind subjects (a credential issued before them): %s jobs come on "
                "the region subject only, shared with probes that cannot run them; a new credential "
                "(enroll again) allows them",
                ",".join(refused),
            )

    def _drop_kind(self, kind: str) -> None:
        """Stop listing `kind` in heartbeats and unsubscribe from its refused kind subject."""
        sub = self._kind_subs.pop(kind, None)
        if sub is not None:
            self._background.append(asyncio.create_task(_unsubscribe(sub)))

    async def _connect(self) -> Client:
        """Connect, retrying until NATS answers (nats-py reconnects forever after that).
        NatsRefusedError when NATS refuses this probe for good (see `refusal`)."""
        cfg = self.config
        options = self._options()
        self._connecting = asyncio.create_task(
            nats.connect(
                cfg.nats_url,
                name=f"probe {cfg.probe_id}",
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.25,
                connect_timeout=2,
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
                closed_cb=self._on_closed,
                **options,
            )
        )
        try:
            return await self._connecting
        except asyncio.CancelledError:
            if self.refused.is_set():
                raise NatsRefusedError(self.refused_reason) from None
            raise
        finally:
            self._connecting = None

    def _options(self) -> dict[str, object]:
        cfg = self.config
        return natscreds.connect_options(
            _path(cfg.nats_credentials),
            _path(cfg.nats_tls_ca),
            url=cfg.nats_url,
            inbox_prefix=natscreds.probe_inbox_prefix(cfg.probe_id),
            cert_file=_path(cfg.nats_tls_cert),
            key_file=_path(cfg.nats_tls_key),
        )

    def _refuse(self, reason: str) -> None:
        """NATS will not take this probe: stop reconnecting, tell whoever waits on `refused`."""
        if self.refused.is_set():
            return
        self.refused_reason = reason
        self.refused.set()
        if self._connecting is not None:
            self._connecting.cancel()
        elif self.nc is not None and not self.nc.is_closed:
            self._background.append(asyncio.create_task(self.nc.close()))

    async def _on_error(self, exc: Exception) -> None:
        found = refusal(exc)
        if found is None:
            text = str(exc).lower()
            if (
                "permissions violation" in text
                and f'subscription to "{subjects.jobs(self.config.region)}.' in text
            ):
                # One of our kind subjects: dropped by `_take_kinds`, or here when it comes
                # later (after a reconnect).
                subject = text.split('subscription to "', 1)[1].split('"', 1)[0]
                self._refused_subjects.add(subject)
                for kind, sub in list(self._kind_subs.items()) if self._kinds_taken else ():
                    if sub.subject == subject:
                        log.warning(
                            "nats refused the kind subject %s: its jobs come on the region subject", subject
                        )
                        self._drop_kind(kind)
            elif "permissions violation" in text:
                log.warning("nats refused an operation error=%s", exc)
            else:
                log.debug("nats error=%r", exc)
            return
        reason, at_once = found
        self._auth_failures += 1
        if at_once or self._auth_failures >= _AUTH_FAILURES_FATAL:
            self._refuse(reason)
        else:
            log.warning("nats refused the connection error=%s", exc)

    async def _on_disconnected(self) -> None:
        log.warning("nats disconnected")

    async def _on_reconnected(self) -> None:
        self._auth_failures = 0
        log.info("nats reconnected")

    async def _on_closed(self) -> None:
        # nats-py closes for good (no reconnect) after a -ERR such as a revocation's.
        if not self._stopping and not self.refused.is_set():
            self._background.append(asyncio.create_task(self._explain_close()))

    async def _explain_close(self) -> None:
        """Refuse with the reason NATS closed the connection. The -ERR that says so races the
        socket's EOF for last_error, so when it is lost one new connection asks the server."""
        last = self.nc.last_error if self.nc is not None else None
        found = refusal(last) if last is not None else None
        if found is None:
            try:
                check = await nats.connect(
                    self.config.nats_url, allow_reconnect=False, connect_timeout=2, **self._options()
                )
            except (OSError, TimeoutError, nats.errors.Error) as exc:
                found = refusal(exc)
                if found is not None and not found[1]:
                    found = (
                        f"NATS closed the connection and now refuses this probe's credential: {found[0]}",
                        True,
                    )
            else:
                await check.close()
        self._refuse(found[0] if found else f"NATS closed the connection ({last!r})")

    async def stop(self) -> None:
        """Stop taking jobs, let in-flight checks finish (bounded), flush results.

        The queue subscription is drained, not dropped: the server stops sending this
        probe jobs (the region's other probes get them), and the jobs it had already
        sent, still in this client's buffer, are taken and run rather than lost. Jobs
        held for their due time run when it comes if it is within `drain_timeout`, under
        the same bound as the checks in flight; the others are answered skipped
        (`probe_stopped`), so that their rounds do not wait for this probe's answer.
        """
        self._draining = True
        subs = [s for s in (self._sub, *self._kind_subs.values()) if s is not None]
        if subs:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.config.drain_timeout):
                    await asyncio.gather(*(s.drain() for s in subs))
        self._stopping = True
        self._skip_held(after=time.time() + self.config.drain_timeout)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.config.drain_timeout):
                await self._none_held.wait()
                if self._tasks:
                    await asyncio.wait(set(self._tasks))
        self._skip_held(after=0.0)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.config.drain_timeout):
                await self._results.join()
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self.nc is not None and not self.nc.is_closed:
            # With NATS away, nats-py writes its pending buffer to the dead transport while
            # closing, and uvloop raises RuntimeError ("the handler is closed"): nothing can be
            # sent anyway, and a stop must still end in a clean exit.
            with contextlib.suppress(RuntimeError):
                await self.nc.close()
        await http.close_sessions()
        await dns.close_resolvers()
        if self.telemetry is not None:
            await asyncio.to_thread(self.telemetry.shutdown)
        log.info("probe stopped probe_id=%s", self.config.probe_id)

    async def abort(self) -> None:
        """End at once, without draining: after NATS refused this probe nothing can be published."""
        self._stopping = True
        for handle, _ in self._held.values():
            handle.cancel()
        self._held.clear()
        for task in [*self._tasks, *self._background]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._background, return_exceptions=True)
        if self.nc is not None and not self.nc.is_closed:
            with contextlib.suppress(Exception):
                await self.nc.close()
        await http.close_sessions()
        await dns.close_resolvers()
        if self.telemetry is not None:
            await asyncio.to_thread(self.telemetry.shutdown)

    # ------------------------------------------------------------ jobs

    async def _on_message(self, msg: Msg) -> None:
        try:
            jobs = wire.decode_jobs(msg.data)
        except msgspec.DecodeError as exc:
            log.warning("undecodable job subject=%s error=%s", msg.subject, exc)
            return
        for job in jobs:
            self.submit(job)

    def submit(self, job: CheckJob) -> bool:
        """Run `job` in the background, from its due time on (a job sent ahead is held until
        then); False when dropped because too many are pending."""
        if self._stopping:
            return False
        if job.due > time.time():
            self._hold(job)
            return True
        return self._start(job)

    def _hold(self, job: CheckJob) -> None:
        """Keep `job` until its due time. It counts as taken (`unacked_since`) meanwhile."""
        loop = asyncio.get_running_loop()
        self._held_keys += 1
        key = self._held_keys
        handle = loop.call_at(loop.time() + (job.due - time.time()) + _HOLD_PAD, self._release, key)
        self._held[key] = (handle, job)
        heapq.heappush(self._held_dues, (job.due, key))
        self._none_held.clear()
        self._unacked[job.due] += 1

    def _release(self, key: int) -> None:
        """A held job's timer fired: start the job, or hold it on when the timer was early
        (see _HOLD_PAD; a check must not start before its due time)."""
        _, job = self._held.pop(key)
        self._settled(job.due)
        if job.due > time.time():
            self._hold(job)
            return
        if not self._held:
            self._none_held.set()
        self._start(job)

    def _skip_held(self, *, after: float) -> None:
        """Answer the held jobs due after `after` as skipped: this probe is stopping."""
        for key, (handle, job) in list(self._held.items()):
            if job.due <= after:
                continue
            handle.cancel()
            del self._held[key]
            result = self._result(
                job,
                Outcome(
                    status=Status.SKIPPED,
                    reason=Reason.PROBE_STOPPED,
                    message="the probe stopped before the job was due",
                ),
                started_at=time.time(),
                duration_ms=0.0,
            )
            try:
                self._results.put_nowait(self._ready(job, result))
            except asyncio.QueueFull:
                self._settled(job.due)
                self.metrics.dropped.labels("buffer_full").inc()
        if not self._held:
            self._none_held.set()

    def _start(self, job: CheckJob) -> bool:
        """Run `job` now in the background; False when dropped because too many are pending."""
        if len(self._tasks) >= self.config.concurrency + self.config.max_pending:
            self.metrics.dropped.labels("overload").inc()
            return False
        self._unacked[job.due] += 1
        self._running += 1
        task = asyncio.create_task(self._run_and_queue(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _run_and_queue(self, job: CheckJob) -> None:
        try:
            result = await self.handle_job(job)
        except BaseException:
            self._running -= 1
            self._settled(job.due)
            raise
        self._running -= 1
        try:
            self._results.put_nowait(self._ready(job, result))
        except asyncio.QueueFull:
            self._settled(job.due)
            self.metrics.dropped.labels("buffer_full").inc()

    def _settled(self, due: float) -> None:
        """A taken job's result is acknowledged (or dropped): it is no longer held here."""
        left = self._unacked.get(due, 0) - 1
        if left > 0:
            self._unacked[due] = left
        else:
            self._unacked.pop(due, None)

    async def handle_job(self, job: CheckJob) -> CheckResult:
        """One job in, one result out, always before the job's deadline."""
        if time.time() >= job.deadline:
            return self._skipped(job)
        slots = self._slots
        if slots.free > 0 and not slots.waiting:
            slots.free -= 1
        else:
            await slots.wait()
        try:
            budget = min(job.timeout, job.deadline - time.time() - self.config.deadline_margin)
            if budget <= 0:
                return self._skipped(job)
            return await self._run(job, budget)
        finally:
            slots.release()

    def _skipped(self, job: CheckJob) -> CheckResult:
        self.metrics.late.inc()
        return self._result(
            job,
            Outcome(status=Status.SKIPPED, reason=Reason.DEADLINE_PASSED, message="deadline passed"),
            started_at=time.time(),
            duration_ms=0.0,
        )

    async def _run(self, job: CheckJob, budget: float) -> CheckResult:
        kind = str(type(job.spec).__struct_config__.tag)
        started_at = time.time()
        start = time.perf_counter()
        telemetry, span = self.telemetry, None
        self._in_flight += 1
        try:
            if telemetry is None:
                outcome = await self._outcome(kind, job, budget)
            else:
                with telemetry.check(job, kind) as span:
                    outcome = await self._outcome(kind, job, budget)
        finally:
            self._in_flight -= 1
        if telemetry is not None and span is not None:
            telemetry.finish(span, job, kind, outcome)
        elapsed = time.perf_counter() - start
        self.checks_total += 1
        metrics = self.metrics
        metrics.checked(kind, outcome.status.value, elapsed)
        metrics.series.record(job, kind, outcome, started_at + elapsed)
        return self._result(job, outcome, started_at=started_at, duration_ms=elapsed * 1000)

    async def _outcome(self, kind: str, job: CheckJob, budget: float) -> Outcome:
        checker = self.checkers.get(kind)
        if checker is None or kind not in self.capabilities:
            # The region's queue group handed us a kind we cannot run here (a peer can, or the
            # controller had not heard our heartbeat yet): say so, the target did not fail.
            return Outcome(
                status=Status.SKIPPED,
                reason=Reason.NO_CAPABLE_PROBE,
                message=f"probe cannot run {kind} checks here",
            )
        try:
            # The checker bounds itself; this guard catches one that does not.
            async with timeout(budget + self.config.deadline_margin / 2):
                return await checker(job.spec, timeout=budget, source_address=self.config.source_address)
        except TimeoutError:
            return Outcome(
                status=Status.FAIL, reason=Reason.TIMEOUT, message=f"no answer within {budget:.2f} s"
            )
        except Exception as exc:
            log.exception("checker crashed kind=%s monitor_id=%s", kind, job.monitor_id)
            return Outcome(
                status=Status.FAIL, reason=Reason.INTERNAL_ERROR, message=f"checker error: {exc!r}"[:300]
            )

    def _result(
        self, job: CheckJob, outcome: Outcome, *, started_at: float, duration_ms: float
    ) -> CheckResult:
        return CheckResult(
            monitor_id=job.monitor_id,
            due=job.due,
            region=job.region,
            attempt=job.attempt,
            probe_id=self.config.probe_id,
            status=outcome.status,
            reason=outcome.reason,
            message=outcome.message,
            started_at=started_at,
            duration_ms=round(duration_ms, 3),
            timings=outcome.timings,
            status_code=outcome.status_code,
            details=outcome.details,
        )

    # ------------------------------------------------------------ results

    def _ready(self, job: CheckJob, result: CheckResult) -> _Ready:
        return _Ready(
            result, wire.encode(result), job.batch_results, job.deadline - self.config.deadline_margin
        )

    async def _publisher(self) -> None:
        while True:
            async with self._collecting:
                ready = await self._collect()
            try:
                await self.publish(ready)
            finally:
                for _ in ready:
                    self._results.task_done()

    async def _collect(self) -> list[_Ready]:
        """The results of the next message(s): the first ready one and, when its job allows a
        batch, every result that becomes ready within `result_linger` of it, up to
        `result_batch_max` or `_BATCH_BYTES`. The wait ends early at the `hold_until` of any
        result taken, and at once when a result whose job does not allow a batch comes (a
        caller may be waiting for it: "check now"), or when no other result can come before
        the wait would end (`_none_before`): the message goes without a timer's wake-up."""
        first = await self._results.get()
        ready = [first]
        cfg = self.config
        if not first.batch or cfg.result_batch_max <= 1:
            return ready
        limit = self._batch_bytes()
        size = len(first.data)
        loop = asyncio.get_running_loop()
        end = loop.time() + min(cfg.result_linger, first.hold_until - time.time())
        while len(ready) < cfg.result_batch_max and size < limit:
            try:
                item = self._results.get_nowait()
            except asyncio.QueueEmpty:
                now = loop.time()
                if end <= now or self._none_before(end - now):
                    break
                try:
                    async with asyncio.timeout_at(end):
                        item = await self._results.get()
                except TimeoutError:
                    break
            ready.append(item)
            if not item.batch:
                break
            size += len(item.data)
            end = min(end, loop.time() + item.hold_until - time.time())
        return ready

    def _none_before(self, seconds: float) -> bool:
        """No result can become ready within `seconds`: no check started is still running
        (or waiting for a slot), and the next job held is due after them. Only with jobs
        held, i.e. sent ahead (the controller's dispatch lookahead): a probe that holds none
        cannot know what comes next and lingers. A job sent for now meanwhile (a check now)
        has its result sent in the next message.

        At 50 checks a second sent ahead, a result message waited for its linger's timer
        after the last check before the next due one had ended: a wake-up of the event loop
        for nothing, and an idle process's wake-up was the probe's main cost per check (50
        to 170 us of CPU each on a 2-core VM)."""
        if self._running or not self._held:
            return False
        return self._next_held_due() > time.time() + seconds

    def _next_held_due(self) -> float:
        dues = self._held_dues
        while dues and dues[0][1] not in self._held:
            heapq.heappop(dues)
        return dues[0][0] if dues else float("inf")

    def _batch_bytes(self) -> int:
        server = self.nc.max_payload if self.nc is not None and self.nc.is_connected else 0
        return min(_BATCH_BYTES, server // 2) if server > 0 else _BATCH_BYTES

    async def publish(self, ready: list[_Ready]) -> None:
        """Publish collected results, each message until JetStream acknowledges it: those
        whose jobs allow a batch together (split to stay under the byte bound; a batch of one
        goes as a single result), the others one by one, all at once."""
        limit = self._batch_bytes()
        batches: list[list[_Ready]] = []
        size = 0
        singles: list[_Ready] = []
        for item in ready:
            if not item.batch or item.result.region != ready[0].result.region:
                singles.append(item)
                continue
            if not batches or size + len(item.data) > limit:
                batches.append([])
                size = 0
            batches[-1].append(item)
            size += len(item.data)
        sends = [self._publish_ready([item]) for item in singles]
        sends += [self._publish_ready(batch) for batch in batches]
        await asyncio.gather(*sends)

    async def _publish_ready(self, ready: list[_Ready]) -> None:
        if len(ready) == 1:
            item = ready[0]
            await self._publish([item.result], item.data, item.result.job_id)
        else:
            results = [item.result for item in ready]
            data = wire.encode_batch([item.data for item in ready])
            await self._publish(results, data, wire.batch_id([r.job_id for r in results]))

    async def publish_one(self, result: CheckResult) -> None:
        """Publish until JetStream acknowledges; the msg id (the job id) makes retries harmless."""
        await self._publish([result], wire.encode(result), result.job_id)

    async def publish_batch(self, results: list[CheckResult]) -> None:
        """Publish `results` (all of one region) as one message until JetStream acknowledges
        it; the batch's msg id (`wire.batch_id`) makes retries harmless."""
        data = wire.encode_batch([wire.encode(r) for r in results])
        await self._publish(results, data, wire.batch_id([r.job_id for r in results]))

    async def _publish(self, results: list[CheckResult], data: bytes, msg_id: str) -> None:
        assert self.js is not None
        headers = {"Nats-Msg-Id": msg_id}
        subject = subjects.results(results[0].region)
        delay = 0.1
        while True:
            try:
                await self.js.publish(subject, data, timeout=_PUBLISH_TIMEOUT, headers=headers)
            except (nats.errors.Error, TimeoutError, OSError) as exc:
                log.debug("publish failed msg_id=%s results=%d error=%r", msg_id, len(results), exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX)
                continue
            self.metrics.published.inc(len(results))
            self.metrics.result_messages.inc()
            self.metrics.results_per_message.observe(len(results))
            for r in results:
                self._settled(r.due)
            return

    # ------------------------------------------------------------ heartbeats

    def heartbeat(self) -> wire.ProbeHeartbeat:
        return wire.ProbeHeartbeat(
            probe_id=self.config.probe_id,
            region=self.config.region,
            version=VERSION,
            concurrency=self.config.concurrency,
            in_flight=self._in_flight,
            started_at=self.started_at,
            sent_at=time.time(),
            source_address=self.config.source_address,
            checks_total=self.checks_total,
            host=self.host,
            capabilities=self.capabilities,
            unacked_since=min(self._unacked) if self._unacked else None,
            job_batches=True,
            kind_subjects=sorted(self._kind_subs),
        )

    async def _heartbeats(self) -> None:
        subject = subjects.heartbeat(self.config.region)
        while True:
            if self.nc is not None and self.nc.is_connected:
                with contextlib.suppress(nats.errors.Error, OSError):
                    await self.nc.publish(subject, wire.encode(self.heartbeat()))
            await asyncio.sleep(self.config.heartbeat_interval)


async def _unsubscribe(sub: Subscription) -> None:
    with contextlib.suppress(nats.errors.Error):
        await sub.unsubscribe()


def _telemetry(config: ProbeConfig, metrics: ProbeMetrics) -> CheckTelemetry | None:
    if not config.otel_endpoint:
        return None
    # Imported only when asked for: a probe without the `otel` extra runs without it.
    from probefleet.probe.otel import CheckTelemetry

    def failed(signal: str) -> None:
        metrics.otel_export_failures.labels(signal).inc()

    return CheckTelemetry(
        config.otel_endpoint,
        probe_id=config.probe_id,
        region=config.region,
        on_failure=failed,
        export_interval=config.otel_export_interval,
    )


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None
