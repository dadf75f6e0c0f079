"""Compression: pruning, quantization fallbacks, quantization-aware training."""
