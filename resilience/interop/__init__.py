"""Bridges to other resilience libraries, for teams migrating to :mod:`resilience`.

Each submodule imports its library lazily (only when one of its functions or classes is used).

* :mod:`resilience.interop.pybreaker`: run an existing ``pybreaker.CircuitBreaker`` as a policy.
"""
