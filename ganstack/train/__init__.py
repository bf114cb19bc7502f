"""Training a built stack: the trainer, its phases, torchrun (distributed), progress lines and text-encoder pretraining."""
