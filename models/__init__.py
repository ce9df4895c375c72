"""Shipped models, one folder each (``birds32``): found through package resources."""
