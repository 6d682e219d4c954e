#!/bin/sh
# Entry point of the pytest-mailtls James image. pytest-mailtls renders everything into /mailtls
# (a bind mount of a host folder):
#   /mailtls/conf/           James configuration (smtpserver.xml, imapserver.xml, pop3server.xml, ...)
#   /mailtls/tls/            keystores and truststores named by the configuration
#   /mailtls/users/<name>    one file per test user, holding its password (UTF-8)
#   /mailtls/mail/<port>/    Maildirs written by the capture hook, one per listening port
# Environment:
#   MAILTLS_JAVA_OPTS  JVM options (heap, GC), space-separated
#   MAILTLS_REENABLE   space-separated entries to drop from jdk.tls.disabledAlgorithms (legacy cells)
#   MAILTLS_DOMAIN     the mail domain to create (default mailtls.test)
#   MAILTLS_KEEP_RESOLV    set: leave /etc/resolv.conf alone (the image build's training run)
# The JVM (org.mailtls.james.MailtlsJamesMain, in ext/) creates the users once James is up and prints
# "MAILTLS: provisioned N users", or "MAILTLS: FAILED ..." and stops.
set -eu

RUN=/opt/james/run
ARCHIVE=/opt/james/james.jsa
mkdir -p "$RUN"
ln -sfn /mailtls/conf "$RUN/conf"

# No DNS for test servers: a resolver on the loopback refuses at once instead of asking the world.
if [ -z "${MAILTLS_KEEP_RESOLV:-}" ]; then
    printf 'nameserver 127.0.0.1\n' > /etc/resolv.conf 2>/dev/null || true
fi

# The class-data-sharing archive recorded at image build (train.sh); a JVM that cannot use it ignores it.
CDS_OPT=""
case "${MAILTLS_JAVA_OPTS:-}" in
    *ArchiveClassesAtExit*) ;;
    *) [ -s "$ARCHIVE" ] && CDS_OPT="-XX:SharedArchiveFile=$ARCHIVE -Xlog:cds=off -Xlog:cds+dynamic=off" ;;
esac

SECURITY_OPT=""
if [ -n "${MAILTLS_REENABLE:-}" ]; then
    # Derived from this image's own java.security, so a JDK update that disables more stays in force.
    java_home=$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")
    stock=$(readlink -f "$java_home/conf/security/java.security")
    printf '%s\n' $MAILTLS_REENABLE > "$RUN/reenable.txt"
    disabled=$(sed -n '/^jdk.tls.disabledAlgorithms=/,/[^\\]$/p' "$stock" \
        | sed 's/^jdk.tls.disabledAlgorithms=//; s/\\$//' | tr '\n' ' ' | tr ',' '\n' \
        | sed 's/^ *//; s/ *$//' | grep -v '^$' | grep -v -x -F -f "$RUN/reenable.txt" | paste -sd, - | sed 's/,/, /g')
    printf 'jdk.tls.disabledAlgorithms=%s\n' "$disabled" > "$RUN/mailtls.security"
    echo "MAILTLS: jdk.tls.disabledAlgorithms=$disabled"
    SECURITY_OPT="-Djava.security.properties=$RUN/mailtls.security"
fi

# shellcheck disable=SC2086  # MAILTLS_JAVA_OPTS is a list of options
exec java ${MAILTLS_JAVA_OPTS:-} $CDS_OPT $SECURITY_OPT \
    -Dworking.directory="$RUN" \
    -Dlogback.configurationFile="$RUN/conf/logback.xml" \
    -cp '/opt/james/lib/*' \
    org.mailtls.james.MailtlsJamesMain
