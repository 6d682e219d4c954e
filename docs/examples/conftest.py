from pytest_mailtls import mailtls_cell, mailtls_noproc, mailtls_proc

# Servers of its own for these cells only: Postfix's SMTP cells that speak only TLSv1 or TLSv1.1
# (the embedded backend's under --mailtls-servers embedded).
legacy_grid = mailtls_proc(
    where={"server": ["postfix", "embedded"], "protocol": "smtp", "policy": ["tls10-only", "tls11-only"]}
)
legacy_server = mailtls_cell("legacy_grid")  # a test taking it runs once per cell of legacy_grid
running = mailtls_noproc(manifest="manifest.json")  # servers started elsewhere by `mailtls up`
