import sys

from pytest_mailtls.probe import parse_target, probe

# python probe_port.py mail.example.com:587 mail.example.com [CA_FILE]
host, port = parse_target(sys.argv[1])
result = probe(host, port, protocol="smtp", mode="starttls", server_hostname=sys.argv[2],
               ca_file=sys.argv[3] if len(sys.argv) > 3 else None, timeout=5.0)
print(result.render())  # human summary
doc = result.to_json()  # the `--json` document below
print(result.accepted_versions)  # e.g. ["TLSv1.2", "TLSv1.3"]
print(result.ciphers("TLSv1.2"))  # OpenSSL names, server's preferred first
