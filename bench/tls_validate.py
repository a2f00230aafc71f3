"""CPU time of validating one certificate chain, as the TLS probe does after each handshake.

    python bench/tls_validate.py [ROUNDS]

A lab PKI is made in a temporary directory (nothing is contacted). Two cases: the chain against its own
CA (valid), and against the system's roots (an unknown authority: the failure path also tries the
leaf's other names). Prints the median microseconds per validation; asserts nothing.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from cryptography import x509

from gatewatch.lab.certs import issue_lab_pki
from gatewatch.probes.tls import validate_chain


def main(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        pki = issue_lab_pki(["site.example"], Path(tmp))
        chain_file, _ = pki.server_files["site.example"]
        marker = b"-----BEGIN CERTIFICATE-----"
        blocks = Path(chain_file).read_bytes().split(marker)[1:]
        chain = [x509.load_pem_x509_certificate(marker + block) for block in blocks]
        for label, ca_file in (("lab CA, valid", pki.ca_file), ("system roots, unknown authority", None)):
            outcome = validate_chain(chain, "site.example", ca_file)  # the first call loads the roots
            times = []
            for _ in range(rounds):  # bounded
                started = time.process_time()
                validate_chain(chain, "site.example", ca_file)
                times.append((time.process_time() - started) * 1e6)
            print(f"{label}: {outcome or 'valid'}, median {statistics.median(times):.0f} us per validation")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
