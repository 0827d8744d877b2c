"""Offline learning: token datasets, the network, training and export (torch lives here)."""
