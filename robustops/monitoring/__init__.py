"""Monitoring: drift features of image batches and the adapter around Evidently."""
