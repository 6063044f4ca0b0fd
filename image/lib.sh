# shellcheck shell=bash
# Helpers shared by image/build and image/boot-test.

# in_tools TOOLS WORK CMD...: runs CMD inside the tools root TOOLS (made by image/build with
# mmdebstrap) with the folder WORK at /work. The mounts live in a private mount namespace and
# disappear with the command, whatever happens to it; the host's packages are never used or
# changed.
in_tools() {
  local tools="$1" work="$2"
  shift 2
  # shellcheck disable=SC2016  # expanded by the inner shell
  unshare --mount --propagation private -- /bin/sh -ec '
    tools="$1"; work="$2"; shift 2
    mkdir -p "$tools/work" "$tools/proc" "$tools/dev"
    mount --bind "$work" "$tools/work"
    mount -t proc proc "$tools/proc"
    mount --bind /dev "$tools/dev"
    exec chroot "$tools" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C TZ=UTC \
      SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-0}" E2FSPROGS_FAKE_TIME="${SOURCE_DATE_EPOCH:-0}" "$@"
  ' in_tools "$tools" "$work" "$@"
}
