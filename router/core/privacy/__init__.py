"""Personal data and the cloud (privacy.cloud_egress): what is found on the device, and what may leave it.

- patterns.py, identifiers.py, addresses.py: the shapes personal data is found by (the ledger's redaction
  reads the shared ones from patterns.py);
- detect.py: every finding in a text, one kind each, never overlapping;
- placeholders.py: one cloud call's values and their stable placeholders ([EMAIL_1]), both ways;
- redacting.py: `redact`, the cloud backend that sends placeholders and restores the answer;
- edge_only.py: `edge_only`, the gate that keeps such a request on the edge, and the backend that refuses
  any cloud call holding personal data.

This package imports nothing at its top, so that the ledger can read the patterns without the backends.
"""
