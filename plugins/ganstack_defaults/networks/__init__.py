"""StackGAN's networks: Conditioning Augmentation and other conditioners, the generator stages, the discriminators; `plugin` registers them."""
