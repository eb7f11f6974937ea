"""netpolc: a network-policy compiler and verifier for Kubernetes."""

__version__ = "0.1.0"
