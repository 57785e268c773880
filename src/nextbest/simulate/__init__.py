"""A synthetic store with known ground truth, deterministic for a seed (see ``simulator``)."""

from nextbest.simulate.backends import Backend, EngineBackend, GrpcBackend
from nextbest.simulate.simulator import SimulationResult, Simulator
from nextbest.simulate.world import START, Cart, Customer, Message, population

__all__ = [
    "START",
    "Backend",
    "Cart",
    "Customer",
    "EngineBackend",
    "GrpcBackend",
    "Message",
    "SimulationResult",
    "Simulator",
    "population",
]
