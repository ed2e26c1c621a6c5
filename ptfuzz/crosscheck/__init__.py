"""crosscheck: the model held against real kernels (this host's, or a foreign arch's under QEMU), operation by operation."""
