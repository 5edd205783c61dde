"""Metrics: accuracies, membership-inference attacks and cost (time, memory)."""
