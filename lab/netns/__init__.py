"""A real on-path censor in network namespaces (root only): see docs/architecture.md and
docs/packet-evidence.md. Nothing here is imported unless a namespace lab is asked for (scapy is needed by
the censor only)."""
