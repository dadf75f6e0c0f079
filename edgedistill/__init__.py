"""edgedistill: distill, compress, export and benchmark PyTorch models for edge devices.

Importing the package must stay cheap: no runtime (torch included) is imported here.
"""

__version__ = "0.1.0"
