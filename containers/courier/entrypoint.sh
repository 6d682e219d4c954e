#!/bin/bash
# Run Courier's authdaemond and one couriertcpd per cell, configured by pytest_mailtls.backends.courier in
# /mailtls/etc (a read-only mount):
#   authdaemonrc, userdb      the auth daemon's settings and the test user (installed into /etc/courier)
#   pki/                      keys and chains, copied to /run/mailtls/pki for the "courier" user: the login
#                             processes start couriertls for STARTTLS as that user, and it must read the key
#   common.env                settings every cell shares (sourced first)
#   cells/<name>.env          one cell's settings: PORT, LOGIN (imaplogin or courierpop3login), IMPLICIT, and
#                             the IMAP_*/POP3_*/TLS_* variables its login process and couriertls read
# Every line a cell's processes write is prefixed "<name>: ", so a cell's log lines can be told apart.
# The container exits as soon as any of its processes does.
set -euo pipefail
etc=/mailtls/etc
lib=/usr/lib/courier/courier

install -m 0644 "$etc/authdaemonrc" /etc/courier/authdaemonrc
install -m 0600 "$etc/userdb" /etc/courier/userdb
makeuserdb
mkdir -p /run/mailtls
if [ -d "$etc/pki" ]; then
    cp -R "$etc/pki" /run/mailtls/pki
    chown -R courier:courier /run/mailtls/pki
fi
mkdir -p /run/courier/authdaemon
/usr/lib/courier/courier-authlib/authdaemond 2>&1 | sed -u 's/^/authdaemond: /' &

# The cells wait for the auth socket: a login before it exists would fail.
for _ in $(seq 100); do
    [ -S /run/courier/authdaemon/socket ] && break
    sleep 0.05
done

for settings in "$etc"/cells/*.env; do
    name=$(basename "$settings" .env)
    env -i /bin/sh -c '
        set -a
        . "$1"
        . "$2"
        case $LOGIN in
        imaplogin) server="/usr/bin/imapd Maildir" ;;
        courierpop3login) server="$3/courierpop3d Maildir" ;;
        *) echo "unknown LOGIN $LOGIN" >&2; exit 1 ;;
        esac
        if [ "$IMPLICIT" = 1 ]; then
            exec /usr/sbin/couriertcpd -address=0 -maxprocs=400 -maxperip=400 -nodnslookup -noidentlookup \
                "$PORT" /usr/bin/couriertls -server -tcpd "$3/$LOGIN" $server
        fi
        exec /usr/sbin/couriertcpd -address=0 -maxprocs=400 -maxperip=400 -nodnslookup -noidentlookup \
            "$PORT" "$3/$LOGIN" $server
    ' sh "$etc/common.env" "$settings" "$lib" 2>&1 | sed -u "s/^/$name: /" &
done

wait -n
echo "mailtls-courier: a Courier process exited; stopping" >&2
exit 1
