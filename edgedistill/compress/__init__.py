"""Compression of the student beyond distillation: the accuracy an INT8 artifact may lose and
the fallbacks tried when the default quantization loses more (accuracy.py, int8 fallbacks in
the backends), pruning, quantization-aware training. Runtimes are imported inside functions only.
"""
