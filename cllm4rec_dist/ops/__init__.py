"""Single-process kernels with no collectives, shared by the dense and the distributed code (the
exact masked top-K); their plain references live with the tests."""
