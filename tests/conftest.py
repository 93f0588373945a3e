"""Test-wide settings: one torch thread (tiny models run faster and the 2 cores are shared)."""

import torch

torch.set_num_threads(1)
