from pytest_mailtls import read_manifest

for endpoint in read_manifest("manifest.json", live=True):  # live: refuse a stale manifest
    ctx = endpoint.client_context("TLSv1.2")  # trusts ca_file, pins the version
    print(endpoint.id, endpoint.url, len(endpoint.messages()))
