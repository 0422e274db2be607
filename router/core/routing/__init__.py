"""PRE_ARBITRATION: a router picks the edge or the cloud from the request alone, before anything is
generated (features.py: what it reads; model.py: the trained model or the default rule, swappable at
run time; mode.py: the mode)."""
