"""The contract every other package speaks: measurement models, observations, controls, verdicts, the
signed envelope, the failure vocabulary, the wire models of the collector's API and the shared vocabulary.

The lowest layer: it imports nothing else of gatewatch.
"""
