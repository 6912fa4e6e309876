"""gradsurrogate: learned and perturbed backpropagation for PyTorch.

Core API::

    from gradsurrogate import BackwardSpec, SurrogateLinear, convert, surrogate_linear
    model = convert(model, BackwardSpec(grad_input="flip:0.3", weight="sign"))
"""

from .backward import (
    MODES,
    TARGETS,
    BackwardMode,
    BackwardSpec,
    Blend,
    Exact,
    Flip,
    Learned,
    MemberModes,
    NoGrad,
    RandomFeedback,
    Sign,
    make_mode,
    parse_mode,
    stack_modes,
)
from .diagnostics import (
    METRICS,
    GradientRecorder,
    end_to_end_fidelity,
    gradient_metrics,
    record_gradients,
)
from .ensemble import EnsembleOptimizer, make_ensemble_optimizer
from .functional import surrogate_conv2d, surrogate_linear
from .layers import (
    ConversionReport,
    EnsembleSurrogateLinear,
    SurrogateConv2d,
    SurrogateLinear,
    SurrogateMixin,
    convert,
    convert_with_report,
    exact_backward,
)

__version__ = "0.1.0"

__all__ = [
    "METRICS",
    "MODES",
    "TARGETS",
    "BackwardMode",
    "BackwardSpec",
    "Blend",
    "ConversionReport",
    "EnsembleOptimizer",
    "EnsembleSurrogateLinear",
    "Exact",
    "Flip",
    "GradientRecorder",
    "Learned",
    "MemberModes",
    "NoGrad",
    "RandomFeedback",
    "Sign",
    "SurrogateConv2d",
    "SurrogateLinear",
    "SurrogateMixin",
    "convert",
    "convert_with_report",
    "end_to_end_fidelity",
    "exact_backward",
    "gradient_metrics",
    "make_ensemble_optimizer",
    "make_mode",
    "parse_mode",
    "record_gradients",
    "stack_modes",
    "surrogate_conv2d",
    "surrogate_linear",
]
