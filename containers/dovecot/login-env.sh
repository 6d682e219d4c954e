#!/bin/sh
# mailtls-login-env SETTINGS BINARY [ARGS...]: start a Dovecot login process with one cell's settings.
#
# Dovecot 2.3 has no per-port TLS settings: ssl_* is refused inside inet_listener, a local_name (SNI) block
# swaps the certificate but not the protocol range, and "-o key=value" on a service's executable cannot
# carry a certificate (no file contents, no spaces). What a login process does honour is its environment
# when started with -k: every KEY=value there overrides the setting "key". So each cell gets its own login
# service whose executable is this wrapper, which turns the cell's SETTINGS file into environment:
#   KEY=value    exported as is (OPENSSL_CONF included: it caps the protocol version)
#   KEY<path     exported with the contents of the file at path (certificates and keys)
# and then execs /usr/lib/dovecot/BINARY -k ARGS.
set -eu
settings=$1
binary=$2
shift 2
while IFS= read -r line || [ -n "$line" ]; do
    case $line in
    '' | '#'*) continue ;;
    esac
    name=${line%%[=<]*}
    rest=${line#"$name"}
    case $rest in
    '='*) export "$name=${rest#=}" ;;
    '<'*) export "$name=$(cat "${rest#<}")" ;;
    *)
        echo "mailtls-login-env: malformed line in $settings: $line" >&2
        exit 1
        ;;
    esac
done <"$settings"
exec "/usr/lib/dovecot/$binary" -k "$@"
