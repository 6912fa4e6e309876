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
    NoGrad,
    RandomFeedback,
    Sign,
    make_mode,
    parse_mode,
)
from .diagnostics import (
    GradientRecorder,
    end_to_end_fidelity,
    gradient_metrics,
    record_gradients,
)
from .functional import surrogate_conv2d, surrogate_linear
from .layers import (
    ConversionReport,
    EnsembleSurrogateLinear,
    SurrogateConv2d,
    SurrogateLinear,
    convert,
    convert_with_report,
    exact_backward,
)

__version__ = "0.1.0"

__all__ = [
    "MODES",
    "TARGETS",
    "BackwardMode",
    "BackwardSpec",
    "Blend",
    "ConversionReport",
    "EnsembleSurrogateLinear",
    "Exact",
    "Flip",
    "GradientRecorder",
    "Learned",
    "NoGrad",
    "RandomFeedback",
    "Sign",
    "SurrogateConv2d",
    "SurrogateLinear",
    "convert",
    "convert_with_report",
    "end_to_end_fidelity",
    "exact_backward",
    "gradient_metrics",
    "make_mode",
    "parse_mode",
    "record_gradients",
    "surrogate_conv2d",
    "surrogate_linear",
]
