"""Class-conditional generators over FlowMo token indices: public model names and the generation pipeline."""

from .ar import ARTransformer
from .config import GeneratorConfig
from .loading import load_generator
from .maskgit import MaskGIT
from .pipeline import Pipeline

__all__ = ["ARTransformer", "GeneratorConfig", "MaskGIT", "Pipeline", "load_generator"]
