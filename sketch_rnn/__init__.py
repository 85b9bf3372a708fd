"""Sketch-RNN in Keras 3: the package behind seq2seqVAE.py (which lists its modules)."""
