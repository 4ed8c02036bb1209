"""advisor: which LLM to run on this machine, in which quantization, on which engine, and then run it."""

__version__ = "0.1.0"
