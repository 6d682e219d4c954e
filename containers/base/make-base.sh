#!/usr/bin/env bash
# Make the Debian base image by hand, where no image registry answers (pytest-mailtls does the same as its
# last resort, after trying to pull it): server images then start FROM this locally imported root filesystem.
#
#   sudo bash containers/base/make-base.sh [TAG]        # default TAG: debian:bookworm-slim
#
# The mirror is $MAILTLS_DEBIAN_MIRROR, else the first Debian `main` source in this machine's apt sources.
# Needs root, debootstrap (`apt-get install debootstrap`) and a running Docker engine. About a minute.
set -euo pipefail

tag=${1:-debian:bookworm-slim}
suite=${MAILTLS_DEBIAN_SUITE:-bookworm}
mirror=${MAILTLS_DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
  mirror=$(
    {
      grep -hsE '^[[:space:]]*deb[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list |
        sed -E 's/\[[^]]*\]//' | awk -v s="$suite" '$3 == s && / main/ { print $2 }'
      awk -v s="$suite" 'BEGIN { RS = ""; FS = "\n" }
        /(^|\n)Types:[^\n]*deb([ \n]|$)/ && $0 ~ ("(^|\n)Suites:[^\n]*[ ]" s "([ \n]|$)") {
          for (i = 1; i <= NF; i++) if ($i ~ /^URIs:/) { split($i, u, /[ \t]+/); print u[2] } }' \
        /etc/apt/sources.list.d/*.sources 2>/dev/null
    } | grep -E '^https?://' | head -n 1
  )
fi
if [ -z "$mirror" ]; then
  echo "make-base: no Debian $suite mirror in /etc/apt; set MAILTLS_DEBIAN_MIRROR=<archive URL>" >&2
  exit 1
fi
command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || {
  echo "make-base: debootstrap is missing: apt-get install debootstrap" >&2
  exit 1
}

rootfs=$(mktemp -d /tmp/mailtls-base-XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
echo "make-base: debootstrap $suite from $mirror into $rootfs"
PATH=$PATH:/usr/sbin:/sbin debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >/dev/null
# Keep docs and caches out of the image and of every later apt-get install, as the official slim images do.
printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
  'path-exclude /usr/share/man/*' 'path-exclude /usr/share/info/*' 'path-exclude /usr/share/locale/*' \
  'path-include /usr/share/locale/locale.alias' 'path-exclude /usr/share/lintian/*' \
  >"$rootfs/etc/dpkg/dpkg.cfg.d/mailtls-slim"
rm -rf "$rootfs"/usr/share/{man,info,lintian} "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin
rm -f "$rootfs"/var/lib/apt/lists/*_*
mkdir -p "$rootfs"/usr/share/man/man{1..8} # openjdk's postinst links into these
find "$rootfs/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
tar --numeric-owner --xattrs -C "$rootfs" -c . | docker import --change 'CMD ["bash"]' - "$tag"
echo "make-base: imported $tag"
