"""The default datasets: StackGAN's preprocessed layout, captioned folders; shared readers, transforms and caches; `plugin` registers them."""
