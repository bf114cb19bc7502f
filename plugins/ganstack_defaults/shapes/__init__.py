"""The synthetic shapes task in one place: scenes and captions, the dataset, and the alignment metric with its judge."""
