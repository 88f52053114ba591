"""agentd: the Krako agent. User handler modules need only this package's public names::

    import agentd

    @agentd.handler("name")
    def run(payload, ctx): ...

See ``agentd.registry`` for the handler contract; ``agentd.main`` for the command line.
This module imports nothing heavy (no gRPC) so handler modules stay cheap to import.
"""

from agentd.registry import HandlerCancelled, HandlerContext, HandlerInputError, HandlerLoadError, RawJson, handler

__all__ = ["HandlerCancelled", "HandlerContext", "HandlerInputError", "HandlerLoadError", "RawJson", "handler"]
