"""From a resolved recipe to modules and data: the stack (stack), the dataset (dataset), the device (devices)."""
