"""patchlang: a language and compiler for minimal, provably correct edits to trained neural networks."""

__version__ = "0.1.0"
