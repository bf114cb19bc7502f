"""ganstack's default plugins: StackGAN and friends, loaded through the `ganstack` entry-point group."""
