#!/bin/sh
# Create the SASL user, then run Postfix's master in the foreground as PID 1.
# The configuration is rendered by pytest_mailtls.backends.postfix into /mailtls/etc (a read-only mount).
set -eu
cp /mailtls/etc/postfix/* /etc/postfix/
# Postfix rereads a config file or map until its mtime is in the past (a guard against half-written
# files): fresh copies would cost about 2 s of start-up, so date them back.
touch -d @946684800 /etc/postfix/*
# Postfix daemons log a broken main.cf/master.cf to syslog, which a container lacks; postconf says it on stderr.
postconf -n >/dev/null
postconf -M >/dev/null
if [ -f /mailtls/etc/sasl-user ]; then
    # Standalone: Cyrus SASL (inside smtpd) checks passwords against sasldb; plaintext there, so CRAM-MD5 works.
    cp /mailtls/etc/sasl/smtpd.conf /etc/postfix/sasl/smtpd.conf
    saslpasswd2 -p -c -f /etc/postfix/sasldb2 -u "$(cat /mailtls/etc/sasl-realm)" "$(cat /mailtls/etc/sasl-user)" \
        < /mailtls/etc/sasl-password
    chown root:postfix /etc/postfix/sasldb2
    chmod 0640 /etc/postfix/sasldb2
fi
if [ -f /mailtls/etc/wait-for-sockets ]; then
    # Combined stack: SASL and delivery go to Dovecot's sockets (a mounted folder). An smtpd that finds no
    # auth socket dies and its service is throttled, so start only once Dovecot has made them.
    limit=${MAILTLS_WAIT_SECONDS:-600}
    started=$(date +%s)
    while read -r socket; do
        [ -n "$socket" ] || continue
        until [ -S "$socket" ]; do
            if [ $(($(date +%s) - started)) -ge "$limit" ]; then
                echo "mailtls-postfix: no Dovecot socket $socket after $limit s; is the Dovecot of this stack running?" >&2
                exit 1
            fi
            sleep 0.02
        done
    done </mailtls/etc/wait-for-sockets
fi
# The image is fixed and freshly made: skip postfix-script's integrity checks (about 0.3 s).
touch /var/spool/postfix/quick-start
exec postfix start-fg
