"""The asyncio client interceptor (``grpc.aio``): same behaviour as the sync one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc
from grpc import aio

import resilience as rs

from ._common import (
    END,
    AttemptState,
    ClientCore,
    ReplayBuffer,
    attempt_metadata,
    attempt_timeout,
    publish_timeout,
)

__all__ = ["AsyncResilienceClientInterceptor"]

if TYPE_CHECKING:
    _UnaryUnaryClientInterceptor = aio.UnaryUnaryClientInterceptor[Any, Any]
    _UnaryStreamClientInterceptor = aio.UnaryStreamClientInterceptor[Any, Any]
    _StreamUnaryClientInterceptor = aio.StreamUnaryClientInterceptor[Any, Any]
    _StreamStreamClientInterceptor = aio.StreamStreamClientInterceptor[Any, Any]
else:
    _UnaryUnaryClientInterceptor = aio.UnaryUnaryClientInterceptor
    _UnaryStreamClientInterceptor = aio.UnaryStreamClientInterceptor
    _StreamUnaryClientInterceptor = aio.StreamUnaryClientInterceptor
    _StreamStreamClientInterceptor = aio.StreamStreamClientInterceptor

_EOF: Any = aio.EOF  # type: ignore[attr-defined]


class _Attempts(AttemptState):
    __slots__ = ()

    async def start(self) -> Any:
        d = self.details
        n = self.n
        self.n = n + 1
        timeout = attempt_timeout(d.timeout)
        if n or timeout is not d.timeout:
            md = d.metadata
            if n:
                md = aio.Metadata(*attempt_metadata(md, n))
            d = aio.ClientCallDetails(d.method, timeout, md, d.credentials, d.wait_for_ready)
        replay = self.replay
        request = self.request if replay is None else replay.amessages()
        return await self.continuation(d, request)

    def __resilience_may_hedge__(self) -> bool:
        """A ``rs.Hedge`` may send a unary-request, unary-response call twice (a cancelled
        loser's RPC is cancelled); streaming calls are never hedged."""
        return self.replay is None


class _StreamingAttempts(_Attempts):
    """The state of a streaming-response call: never hedged (a discarded attempt's stream
    would stay open)."""

    __slots__ = ()

    def __resilience_may_hedge__(self) -> bool:
        return False


async def _unary_attempt(state: _Attempts) -> Any:
    call = await state.start()
    try:
        await call
    except Exception as exc:
        state.failed(exc)
        raise
    return call  # done: awaiting it again gives the response


async def _stream_attempt(state: _Attempts) -> tuple[Any, Any]:
    call = await state.start()
    try:
        first = await call.read()
    except Exception as exc:
        state.failed(exc)
        raise
    return call, (END if first is _EOF else first)


async def _responses(call: Any, first: Any) -> AsyncIterator[Any]:
    if first is END:
        return
    yield first
    while True:
        item = await call.read()
        if item is _EOF:
            return
        yield item


class _UnaryUnary(_UnaryUnaryClientInterceptor):
    def __init__(self, owner: AsyncResilienceClientInterceptor) -> None:
        self.owner = owner

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await self.owner.intercept_unary_unary(continuation, details, request)


class _UnaryStream(_UnaryStreamClientInterceptor):
    def __init__(self, owner: AsyncResilienceClientInterceptor) -> None:
        self.owner = owner

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await self.owner.intercept_unary_stream(continuation, details, request)


class _StreamUnary(_StreamUnaryClientInterceptor):
    def __init__(self, owner: AsyncResilienceClientInterceptor) -> None:
        self.owner = owner

    async def intercept_stream_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await self.owner.intercept_stream_unary(continuation, details, request)


class _StreamStream(_StreamStreamClientInterceptor):
    def __init__(self, owner: AsyncResilienceClientInterceptor) -> None:
        self.owner = owner

    async def intercept_stream_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await self.owner.intercept_stream_stream(continuation, details, request)


class AsyncResilienceClientInterceptor(ClientCore):
    """Run every attempt of every outgoing RPC through a resilience pipeline (``grpc.aio``).

    ``grpc.aio`` channels register an interceptor object for one call shape only (the first
    interface it implements), so pass :meth:`channel_interceptors`, one object per shape, to
    cover all four::

        channel = grpc.aio.insecure_channel(target, interceptors=interceptor.channel_interceptors())

    ``interceptors=[interceptor]`` fails loudly (grpc raises ``ValueError`` when the channel is
    created, and type checkers reject it) rather than silently leaving streaming calls
    unguarded: the interceptor itself implements none of grpc's interfaces. Behaviour as
    :class:`ResilienceClientInterceptor`; streaming-response calls run the pipeline up to the
    first response message in the interceptor's task (grpc runs interceptors in a task of their
    own, so the caller is not blocked and may keep writing requests), then stream the rest.

    Args:
        pipeline: a policy or :class:`resilience.Pipeline` (``None``: only deadline handling).
        replay_limit: request messages remembered for retrying streaming-request calls.
        clock: time source of the call deadline.
        native_errors: refusals as :class:`ResilienceRpcError` (an ``AioRpcError``; default)
            or as raised.
        listeners: receive the events of the pipeline's policies (besides their own
            listeners), with ``operation`` the RPC method.

    Example:
        >>> import grpc, resilience as rs
        >>> from interceptors.grpc import AsyncResilienceClientInterceptor, grpc_retry
        >>> interceptor = AsyncResilienceClientInterceptor(pipeline=grpc_retry(attempts=3))
    """

    _attempt_fns = (_unary_attempt, _stream_attempt)

    def __repr__(self) -> str:
        # grpc's ValueError for ``interceptors=[interceptor]`` shows this: say what to do
        return (
            f"<AsyncResilienceClientInterceptor pipeline={self.pipeline!r}: give grpc.aio "
            "channels interceptors=interceptor.channel_interceptors(), one per call shape>"
        )

    def channel_interceptors(self) -> list[Any]:
        """This interceptor once per call shape, for ``grpc.aio`` channels' ``interceptors=``.

        Example:
            >>> from interceptors.grpc import AsyncResilienceClientInterceptor
            >>> shapes = AsyncResilienceClientInterceptor(pipeline=None).channel_interceptors()
            >>> [type(s).__name__ for s in shapes]
            ['_UnaryUnary', '_UnaryStream', '_StreamUnary', '_StreamStream']
        """
        return [_UnaryUnary(self), _UnaryStream(self), _StreamUnary(self), _StreamStream(self)]

    async def _run(
        self, continuation: Any, details: Any, request: Any, stream_req: bool, streaming: bool
    ) -> Any:
        state = (_StreamingAttempts if streaming else _Attempts)(
            continuation,
            details,
            request,
            ReplayBuffer(request, self.replay_limit) if stream_req else None,
        )
        run = self._composed(details.method, streaming)
        token = publish_timeout(details.timeout, self._clock)
        try:
            out = await run(state)
        except grpc.RpcError:
            raise
        except rs.RejectedError as exc:
            refused = self.refused(exc)
            if refused is exc:
                raise
            raise refused from exc
        finally:
            if token is not None:
                rs.reset_deadline(token)
        if streaming:
            call, first = out
            return _responses(call, first)
        return out

    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        """Intercept a unary-unary call."""
        return await self._run(continuation, client_call_details, request, False, False)

    async def intercept_stream_unary(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        """Intercept a stream-unary call."""
        return await self._run(continuation, client_call_details, request_iterator, True, False)

    async def intercept_unary_stream(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        """Intercept a unary-stream call."""
        return await self._run(continuation, client_call_details, request, False, True)

    async def intercept_stream_stream(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        """Intercept a stream-stream call."""
        return await self._run(continuation, client_call_details, request_iterator, True, True)
