"""The default text encoders (bag of n-grams, char-CNN-RNN, MiniLM, precomputed); `plugin` registers them."""
