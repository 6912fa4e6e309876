"""gradsurrogate: learned and perturbed backpropagation for PyTorch.

Core API::

    from gradsurrogate import BackwardSpec, SurrogateLinear, convert, surrogate_linear
    model = convert(model, BackwardSpec(grad_input="flip:0.3", weight="sign"))
"""

from .backward import (
    BRSF,
    FA,
    FRSF,
    MODES,
    TARGETS,
    USF,
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
    feedback_alignment,
    gradient_metrics,
    record_gradients,
)
from .ensemble import EnsembleOptimizer, make_ensemble_optimizer
from .functional import surrogate_conv, surrogate_conv2d, surrogate_linear
from .layers import (
    EnsembleSurrogateConv1d,
    EnsembleSurrogateConv2d,
    EnsembleSurrogateConv3d,
    EnsembleSurrogateLinear,
    SurrogateConv1d,
    SurrogateConv2d,
    SurrogateConv3d,
    SurrogateLinear,
    SurrogateMixin,
)

# isort: split
from .attention import SurrogateMultiheadAttention  # registers nn.MultiheadAttention with convert
from .convert import (  # after .layers, which re-exports these names
    SURROGATES,
    ConversionReport,
    convert,
    convert_with_report,
    exact_backward,
    register_surrogate,
)
from .dfa import DFASpec, DirectFeedbackAlignment, dfa  # builds on .layers

__version__ = "0.1.0"

__all__ = [
    "BRSF",
    "FA",
    "FRSF",
    "METRICS",
    "MODES",
    "SURROGATES",
    "TARGETS",
    "USF",
    "BackwardMode",
    "BackwardSpec",
    "Blend",
    "ConversionReport",
    "DFASpec",
    "DirectFeedbackAlignment",
    "EnsembleOptimizer",
    "EnsembleSurrogateConv1d",
    "EnsembleSurrogateConv2d",
    "EnsembleSurrogateConv3d",
    "EnsembleSurrogateLinear",
    "Exact",
    "Flip",
    "GradientRecorder",
    "Learned",
    "MemberModes",
    "NoGrad",
    "RandomFeedback",
    "Sign",
    "SurrogateConv1d",
    "SurrogateConv2d",
    "SurrogateConv3d",
    "SurrogateLinear",
    "SurrogateMixin",
    "SurrogateMultiheadAttention",
    "convert",
    "convert_with_report",
    "dfa",
    "end_to_end_fidelity",
    "exact_backward",
    "feedback_alignment",
    "gradient_metrics",
    "make_ensemble_optimizer",
    "make_mode",
    "parse_mode",
    "record_gradients",
    "register_surrogate",
    "stack_modes",
    "surrogate_conv",
    "surrogate_conv2d",
    "surrogate_linear",
]
