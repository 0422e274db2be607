"""Probes: small models that read the edge model's own hidden states to predict what asking the cloud
would gain.

- The draft probe (POST_ARBITRATION's `probe` scorer) reads the state at the end of the edge's draft
  and the features read from the draft itself (no samples, no verification): it costs no model call.
- The prefill probe (PRE_ARBITRATION's and AUTO's) reads the state at the end of the prompt, after the
  edge's prefill and before any token is decoded: a request it keeps on the edge reuses that prefill.

A probe is trained for one edge model file: its meta.json records the file's SHA-256, and a daemon whose
edge is another file refuses to start with it (router/core/probes/model.py).
"""
