"""zitflow: cached, declarative recipes for Z-Image-Turbo.

A recipe is a DAG of stages (resolution -> encode -> denoise -> decode -> post -> export);
the executor runs each stage only when its content-addressed cache entry is missing.
"""

__version__ = "0.1.0"
