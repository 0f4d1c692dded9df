"""Adapters of :mod:`resilience` to transports: import the one you use.

* :mod:`interceptors.asgi` -- pure ASGI middleware (``ResilienceMiddleware``,
  ``RateLimitMiddleware``, ``IdempotencyMiddleware``).
* :mod:`interceptors.httpx` -- ``ResilientTransport`` / ``AsyncResilientTransport``.
* :mod:`interceptors.grpc` -- client and server interceptors, sync and ``grpc.aio``.
* :mod:`interceptors.errors` -- the one table of resilience errors to HTTP and gRPC statuses.

Importing this package imports none of them (nor httpx or grpc).
"""

__all__: list[str] = []
