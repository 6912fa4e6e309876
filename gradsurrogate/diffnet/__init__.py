"""Deep differential networks: MLPs returning exact input Jacobians and Hessians.

See :class:`DifferentialMLP` for the model and :mod:`gradsurrogate.diffnet.experiment` for
the reference's 1-d sin(x) / 2-d cos(x)·sin(y) regression experiments.
"""

from gradsurrogate.diffnet.model import HESSIAN_MODES, INITS, JACOBIAN_MODES, DifferentialMLP

__all__ = ["HESSIAN_MODES", "INITS", "JACOBIAN_MODES", "DifferentialMLP"]
