"""pruning_core: pure-PyTorch sparsity metrics, masks, pruners, models, datasets and sensitivity."""
