import sys

from pytest_mailtls import get_client, read_manifest
from pytest_mailtls.certify import assert_outcome, certify, check, exit_status

endpoints = read_manifest("manifest.json", live=True)  # servers started by `mailtls up`
client = get_client("python-smtplib")
report = certify(client, endpoints, progress=lambda done, total, line: print(f"[{done}/{total}] {line}"))
report.write_all("out/")  # report.json, junit.xml, report.md, report.html

# One cell, judged as in a test: a failure carries the diagnosis and its evidence.
record = check(client, endpoints[0])
assert_outcome(record)  # AssertionError unless pass, or refused with the expected class
sys.exit(exit_status(report))
