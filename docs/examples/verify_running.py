import sys

from pytest_mailtls import read_manifest
from pytest_mailtls.verify import verify_endpoints

report = verify_endpoints(read_manifest("manifest.json", live=True), progress=print)
print(report.render_table())
sys.exit(0 if report.ok else 1)
