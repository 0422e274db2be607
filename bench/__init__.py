"""The bench: data sets, summaries and plots; it reaches the daemon only through the SDK."""
