"""gRPC servicers, proto <-> domain conversion, interceptors and health."""

from nextbest.server.app import SERVICE_NAME, NextbestServer

__all__ = ["SERVICE_NAME", "NextbestServer"]
