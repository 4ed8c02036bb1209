"""vLLM models that several layers share (the memory maths of its start-up): pure, no I/O."""
