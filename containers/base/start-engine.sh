#!/usr/bin/env bash
# Make sure a Docker engine answers, on a Debian machine where we are root (CI, a fresh dev box).
#
#   bash containers/base/start-engine.sh
#
# An engine that already answers is left alone. Otherwise docker.io is installed if missing, dockerd is
# started in the background with its log in $MAILTLS_DOCKERD_LOG, and we wait at most
# $MAILTLS_DOCKERD_TIMEOUT seconds for `docker info`. Extra dockerd flags (tests, a second engine):
# $MAILTLS_DOCKERD_ARGS and $MAILTLS_DOCKERD_PIDFILE. debootstrap is not installed here: the base image is
# pulled where a registry answers, and only made with debootstrap where none does (see README.md).
set -euo pipefail

log=${MAILTLS_DOCKERD_LOG:-/tmp/dockerd.log}
timeout=${MAILTLS_DOCKERD_TIMEOUT:-60}
pidfile=${MAILTLS_DOCKERD_PIDFILE:-/var/run/docker.pid}
read -r -a extra_args <<<"${MAILTLS_DOCKERD_ARGS:-}"

if docker info >/dev/null 2>&1; then
  echo "start-engine: a Docker engine already answers (${DOCKER_HOST:-default socket}); leaving it alone"
  exit 0
fi

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
if [ ${#missing[@]} -gt 0 ]; then
  echo "start-engine: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# A dockerd that is still starting (or hung) owns the socket: wait for it instead of starting a second.
if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  echo "start-engine: dockerd $(cat "$pidfile") is running but not answering yet; waiting"
  started=""
else
  rm -f "$pidfile"
  echo "start-engine: starting dockerd (log: $log)"
  setsid dockerd --pidfile "$pidfile" "${extra_args[@]}" </dev/null >"$log" 2>&1 &
  started=$!
fi

t0=$(date +%s%N)
deadline=$((SECONDS + timeout))
until docker info >/dev/null 2>&1; do
  if [ -n "$started" ] && ! kill -0 "$started" 2>/dev/null; then
    echo "start-engine: dockerd exited; last log lines:" >&2
    tail -n 30 "$log" >&2
    exit 1
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "start-engine: no answer from the Docker engine within ${timeout} s" >&2
    [ -z "$started" ] || tail -n 30 "$log" >&2
    exit 1
  fi
  sleep 0.2
done
echo "start-engine: Docker engine ready after $((($(date +%s%N) - t0) / 1000000)) ms"
