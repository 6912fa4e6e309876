"""JacNet: functions learned through structured Jacobians (Lorraine & Hossain, 2019)."""

from .model import JacNet
from .structures import (
    STRUCTURES,
    Complex,
    Conservative,
    Invertible,
    Lipschitz,
    NoStructure,
    Orientation,
    Structure,
    get_structure,
)

__all__ = [
    "STRUCTURES",
    "Complex",
    "Conservative",
    "Invertible",
    "JacNet",
    "Lipschitz",
    "NoStructure",
    "Orientation",
    "Structure",
    "get_structure",
]
