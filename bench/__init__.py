"""Benchmarks of triaged against a real Dovecot and aiosmtpd on 127.0.0.1 (see README).

Run from the repository root: `.venv/bin/python -m bench` (full) or `... -m bench --smoke`.
Each figure is compared with a naive baseline measured in the same run on the same data.
"""
