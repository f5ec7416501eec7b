"""Repo-level test configuration: keep the tiny model cache inside the test session's control."""

import os

import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Tiny models run fastest on one thread, and two busy threads per xdist worker oversubscribe 2 cores.
torch.set_num_threads(1)
