"""The default losses (matching-aware adversarial, hinge, KL, colour consistency); `plugin` registers them."""
