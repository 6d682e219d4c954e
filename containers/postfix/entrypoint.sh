#!/bin/sh
# Create the SASL user, then run Postfix's master in the foreground as PID 1.
# The configuration is rendered by pytest_mailtls.backends.postfix into /mailtls/etc (a read-only mount).
set -eu
cp /mailtls/etc/postfix/* /etc/postfix/
cp /mailtls/etc/sasl/smtpd.conf /etc/postfix/sasl/smtpd.conf
# Postfix rereads a config file or map until its mtime is in the past (a guard against half-written
# files): fresh copies would cost about 2 s of start-up, so date them back.
touch -d @946684800 /etc/postfix/*
# Postfix daemons log a broken main.cf/master.cf to syslog, which a container lacks; postconf says it on stderr.
postconf -n >/dev/null
postconf -M >/dev/null
# Cyrus SASL (inside smtpd) checks passwords against sasldb; plaintext there, so CRAM-MD5 works too.
saslpasswd2 -p -c -f /etc/postfix/sasldb2 -u "$(cat /mailtls/etc/sasl-realm)" "$(cat /mailtls/etc/sasl-user)" \
    < /mailtls/etc/sasl-password
chown root:postfix /etc/postfix/sasldb2
chmod 0640 /etc/postfix/sasldb2
# The image is fixed and freshly made: skip postfix-script's integrity checks (about 0.3 s).
touch /var/spool/postfix/quick-start
exec postfix start-fg
