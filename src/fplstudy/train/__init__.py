"""Training: the engine, the torch.distributed backend, one run into a run folder, run files."""
