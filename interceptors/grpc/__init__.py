"""gRPC client and server interceptors running RPCs through resilience pipelines.

Example:
    >>> import grpc, resilience as rs
    >>> from interceptors.grpc import ResilienceClientInterceptor, grpc_retry
    >>> client = ResilienceClientInterceptor(
    ...     pipeline=rs.Pipeline(rs.Timeout(1.0), grpc_retry(attempts=3), name="billing"))
    >>> client.pipeline.name
    'billing'

Needs the ``grpc`` extra (``grpcio``); ``import interceptors`` alone does not import grpc.
"""

from __future__ import annotations

from ._aio_client import AsyncResilienceClientInterceptor
from ._aio_server import AsyncResilienceServerInterceptor
from ._breaker import grpc_breaker, is_backpressure
from ._client import ResilienceClientInterceptor
from ._common import GrpcRetry, grpc_retry, method_key
from ._ratelimit import AsyncRateLimitServerInterceptor, RateLimitServerInterceptor
from ._refusal import ResilienceRpcError, native_refusal
from ._server import (
    IDEMPOTENCY_KEY,
    REPLAYED_KEY,
    ResilienceServerInterceptor,
    default_principal,
    idempotency_key,
)
from ._status import (
    PREVIOUS_ATTEMPTS_KEY,
    PUSHBACK_KEY,
    StatusError,
    format_pushback,
    grpc_retry_after,
    parse_pushback,
    retryable,
    status_for,
)

__all__ = [
    "IDEMPOTENCY_KEY",
    "PREVIOUS_ATTEMPTS_KEY",
    "PUSHBACK_KEY",
    "REPLAYED_KEY",
    "AsyncRateLimitServerInterceptor",
    "AsyncResilienceClientInterceptor",
    "AsyncResilienceServerInterceptor",
    "GrpcRetry",
    "RateLimitServerInterceptor",
    "ResilienceClientInterceptor",
    "ResilienceRpcError",
    "ResilienceServerInterceptor",
    "StatusError",
    "default_principal",
    "format_pushback",
    "grpc_breaker",
    "grpc_retry",
    "grpc_retry_after",
    "idempotency_key",
    "is_backpressure",
    "method_key",
    "native_refusal",
    "parse_pushback",
    "retryable",
    "status_for",
]
