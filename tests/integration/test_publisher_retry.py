"""InteractionPublisher's retry, pipelining and error paths, against a scripted fake producer.

No broker is needed (so no integration marker): a real broker cannot be made to fail on cue.
The fake resolves each send on the next loop turn, like a producer waiting for its batch.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    RequestTimedOutError,
)

from producers.publisher import (
    InteractionPublisher,
    PublishFailed,
    PublishRejected,
    RetryPolicy,
    is_transient,
)
from tests.events import cloudevent

NOW = datetime(2026, 3, 1, tzinfo=UTC)
FAST = RetryPolicy(attempts=4, first_delay=0.001, max_delay=0.004)
Script = Callable[[bytes, int], BaseException | None]  # (value, attempt) -> error or None


class FakeProducer:
    def __init__(self, script: Script = lambda value, attempt: None) -> None:
        self.script = script
        self.attempts: Counter[bytes] = Counter()
        self.delivered: list[tuple[bytes | None, bytes]] = []
        self.outstanding = 0
        self.most_outstanding = 0
        self.stopped = False

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        self.stopped = True

    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        *,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[Any]:
        assert value is not None
        self.attempts[value] += 1
        error = self.script(value, self.attempts[value])
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.outstanding += 1
        self.most_outstanding = max(self.most_outstanding, self.outstanding)
        asyncio.get_running_loop().call_soon(self._resolve, future, error, key, value)
        return future

    def _resolve(
        self,
        future: asyncio.Future[Any],
        error: BaseException | None,
        key: bytes | None,
        value: bytes,
    ) -> None:
        self.outstanding -= 1
        if error is None:
            self.delivered.append((key, value))
            future.set_result(object())
        else:
            future.set_exception(error)


def publisher(fake: FakeProducer, **options: Any) -> InteractionPublisher:
    return InteractionPublisher(
        "", clock=lambda: NOW, retry=FAST, producer_factory=lambda: fake, **options
    )


def visits(n: int, patient: str = "p-000001") -> list[dict[str, Any]]:
    return [
        cloudevent(
            "visit.completed",
            patient,
            f"2026-02-01T10:{i:02d}:00Z",
            {"visit_id": f"v-{i}", "visit_type": "in_person"},
            id=f"visit-{patient}-{i}",
        )
        for i in range(n)
    ]


def test_backoff_doubles_up_to_the_cap_and_jitter_only_shortens_it() -> None:
    policy = RetryPolicy(attempts=6, first_delay=0.1, max_delay=0.5)
    assert [policy.delay(n, 0.0) for n in range(1, 6)] == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])
    assert policy.delay(2, 0.999) == pytest.approx(0.1, rel=0.01)
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)


def test_transient_means_retriable_or_expired() -> None:
    assert is_transient(RequestTimedOutError())
    assert is_transient(KafkaConnectionError())
    assert is_transient(KafkaTimeoutError())
    assert not is_transient(MessageSizeTooLargeError())


async def test_a_transient_failure_is_retried_and_then_delivered() -> None:
    fake = FakeProducer(lambda value, attempt: RequestTimedOutError() if attempt < 3 else None)
    (event,) = visits(1)
    async with publisher(fake) as pub:
        await pub.publish(event)
    assert fake.delivered == [(b"p-000001", orjson.dumps(event))]
    assert fake.attempts[orjson.dumps(event)] == 3
    assert fake.stopped


async def test_retries_are_bounded_then_publish_failed() -> None:
    fake = FakeProducer(lambda value, attempt: RequestTimedOutError())
    async with publisher(fake) as pub:
        with pytest.raises(PublishFailed) as failed:
            await pub.publish(visits(1)[0])
    assert failed.value.attempts == FAST.attempts
    assert isinstance(failed.value.__cause__, RequestTimedOutError)
    assert "RequestTimedOutError" in str(failed.value)


async def test_a_permanent_failure_is_not_retried() -> None:
    fake = FakeProducer(lambda value, attempt: MessageSizeTooLargeError())
    async with publisher(fake) as pub:
        with pytest.raises(PublishFailed) as failed:
            await pub.publish(visits(1)[0])
    assert failed.value.attempts == 1
    assert sum(fake.attempts.values()) == 1


async def test_publish_many_pipelines_and_retries_only_the_failed_in_order() -> None:
    events = visits(10)
    flaky = {orjson.dumps(events[i]) for i in (2, 5, 7)}
    fake = FakeProducer(
        lambda value, attempt: KafkaConnectionError() if value in flaky and attempt == 1 else None
    )
    async with publisher(fake) as pub:
        assert await pub.publish_many(events) == 10
    assert fake.most_outstanding == 10  # all in flight at once, not one by one
    delivered = [value for _, value in fake.delivered]
    assert sorted(delivered) == sorted(orjson.dumps(e) for e in events)
    assert delivered[-3:] == [orjson.dumps(events[i]) for i in (2, 5, 7)]
    assert sum(fake.attempts.values()) == 13


async def test_the_window_bounds_sends_in_flight() -> None:
    fake = FakeProducer()
    async with publisher(fake, window=4) as pub:
        assert await pub.send_raw_many_unvalidated((None, b"%d" % i) for i in range(10)) == 10
    assert fake.most_outstanding == 4
    assert len(fake.delivered) == 10


async def test_raw_records_may_come_from_an_async_stream() -> None:
    async def stream() -> Any:
        for i in range(3):
            await asyncio.sleep(0)
            yield "p-000002", b"raw-%d" % i

    fake = FakeProducer()
    async with publisher(fake) as pub:
        assert await pub.send_raw_many_unvalidated(stream()) == 3
    assert fake.delivered == [(b"p-000002", b"raw-%d" % i) for i in range(3)]


async def test_an_invalid_event_in_a_batch_stops_the_whole_batch() -> None:
    events: list[Any] = visits(3)
    events[1] = {**events[1], "time": "2036-01-01T00:00:00Z"}
    fake = FakeProducer()
    async with publisher(fake) as pub:
        with pytest.raises(PublishRejected) as rejected:
            await pub.publish_many(events)
        with pytest.raises(PublishRejected) as unserialisable:
            await pub.publish({**visits(1)[0], "data": {"amount": object()}})
    assert (rejected.value.code, rejected.value.index) == ("time_in_future", 1)
    assert unserialisable.value.code == "not_json"
    assert fake.attempts == Counter()


async def test_a_broker_that_cannot_be_reached_at_start_fails_clearly() -> None:
    class Unreachable(FakeProducer):
        async def start(self) -> None:
            raise KafkaConnectionError("no broker")

    fake = Unreachable()
    with pytest.raises(PublishFailed, match="could not connect"):
        async with publisher(fake):
            pass
    assert fake.stopped


async def test_sending_outside_the_context_is_a_usage_error() -> None:
    with pytest.raises(RuntimeError, match="async with"):
        await publisher(FakeProducer()).send_raw_unvalidated(None, b"x")


def test_a_publisher_needs_somewhere_to_publish() -> None:
    with pytest.raises(ValueError):
        InteractionPublisher("")
