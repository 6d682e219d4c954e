#!/bin/sh
# Run Dovecot in the foreground as PID 1 with the configuration rendered by
# pytest_mailtls.backends.dovecot into /mailtls/etc (a read-only mount).
set -eu
# doveadm and friends look for the default path: point it at the rendered file.
ln -sf /mailtls/etc/dovecot.conf /etc/dovecot/dovecot.conf
exec dovecot -F -c /mailtls/etc/dovecot.conf
