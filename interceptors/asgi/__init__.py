from ._idempotency import IdempotencyMiddleware

__all__ = ["IdempotencyMiddleware"]
