"""The default text encoders (bag of n-grams, char-CNN-RNN, MiniLM, precomputed, Reed's pretrained
char-CNN-RNN read from Torch7) and the importer of Reed's files; `plugin` registers them."""
