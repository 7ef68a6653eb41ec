"""zoo: the user API (compile, generate) over the zoo_ref reference models."""
__version__ = "0.1.0"
