#!/bin/sh
# Run at image build: records a class-data-sharing archive of James' start-up (/opt/james/james.jsa),
# which the entrypoint then hands to every JVM (about a third less start-up CPU). A short run of the real
# entrypoint with the configuration in training/ (rendered by pytest_mailtls.backends.james.training_files),
# a few TLS logins with curl, then SIGTERM, on which the JVM writes the archive. Best effort: without the
# archive James starts all the same, only slower.
set -u
ARCHIVE=/opt/james/james.jsa
LOG=/tmp/train.log
PASSWORD=training
USER_ADDRESS=trainer@mailtls.test

cp -r /opt/james/training /mailtls
mkdir -p /mailtls/tls /mailtls/mail
# Throwaway keys for the run; the real ones come from pytest-mailtls' session PKI.
keytool -genkeypair -alias mailtls -keyalg RSA -keysize 2048 -dname CN=localhost -validity 2 \
    -storetype JKS -keystore /mailtls/tls/valid.jks -storepass "$PASSWORD" -keypass "$PASSWORD" 2>/dev/null
keytool -exportcert -alias mailtls -keystore /mailtls/tls/valid.jks -storepass "$PASSWORD" -file /tmp/ca.der 2>/dev/null
keytool -importcert -noprompt -alias ca -file /tmp/ca.der -storetype JKS -keystore /mailtls/tls/client-ca.jks \
    -storepass "$PASSWORD" 2>/dev/null

set -a
. /mailtls/environment
set +a
MAILTLS_JAVA_OPTS="$MAILTLS_JAVA_OPTS -XX:ArchiveClassesAtExit=$ARCHIVE -Xlog:cds=off -Xlog:cds+dynamic=off"
MAILTLS_KEEP_RESOLV=1
export MAILTLS_JAVA_OPTS MAILTLS_KEEP_RESOLV

/opt/james/entrypoint.sh > "$LOG" 2>&1 &
pid=$!
deadline=$(( $(date +%s) + 300 ))
until grep -q -E 'MAILTLS: (provisioned|FAILED)' "$LOG"; do
    if ! kill -0 "$pid" 2>/dev/null || [ "$(date +%s)" -ge "$deadline" ]; then
        break
    fi
    sleep 0.5
done
if grep -q 'MAILTLS: provisioned' "$LOG"; then
    # Handshakes and logins load the TLS and protocol classes as well.
    curl -sk --max-time 20 --ssl-reqd "smtp://127.0.0.1:47391" -X EHLO >/dev/null 2>&1 || true
    curl -sk --max-time 20 "imaps://127.0.0.1:47392/" -u "$USER_ADDRESS:$PASSWORD" >/dev/null 2>&1 || true
    curl -sk --max-time 20 --tlsv1 --tls-max 1.0 --ciphers 'DEFAULT:@SECLEVEL=0' --ssl-reqd \
        "pop3://127.0.0.1:47393/" -u "$USER_ADDRESS:$PASSWORD" >/dev/null 2>&1 || true
fi
kill -TERM "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
rm -rf /mailtls /tmp/ca.der
if [ -s "$ARCHIVE" ]; then
    echo "CDS archive written: $(du -h "$ARCHIVE" | cut -f1)"
else
    rm -f "$ARCHIVE"
    echo "CDS training failed; James will start without the archive. Its log:"
    tail -n 40 "$LOG"
fi
rm -f "$LOG"
exit 0
