"""The volunteer's local web page (``gatewatch-agent ui``): onboarding and consent, settings, a run with
live progress, results, the upload queue and an export, served on loopback only.

Kept out of the ``run``/``daemon`` import path: only ``gatewatch-agent ui`` imports it.
"""
