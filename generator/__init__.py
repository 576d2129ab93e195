"""Class-conditional generators over FlowMo token indices: public model names only."""

from .ar import ARTransformer
from .config import GeneratorConfig
from .loading import load_generator
from .maskgit import MaskGIT

__all__ = ["ARTransformer", "GeneratorConfig", "MaskGIT", "load_generator"]
