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

# make_update_signer DIR [NAME]: a throwaway update CA (DIR/update-ca.pem and its key) and a
# bundle signing certificate it issued (DIR/signer.pem, DIR/signer.key), their common names
# ending in NAME (default "test"; a second CA of a rotation gets its own), for tests only: a real
# operator's signing key is given to image/build and never made or kept here. No extended key
# usage on the signer: RAUC checks it for CMS signing, which a TLS-only certificate would fail.
make_update_signer() {
  local dir="$1" name="${2:-test}"
  mkdir -p "$dir"
  chmod 0700 "$dir"
  openssl ecparam -name prime256v1 -genkey -noout -out "$dir/update-ca.key" &&
    openssl req -x509 -new -key "$dir/update-ca.key" -sha256 -days 30 \
      -subj "/CN=renkei throwaway $name update CA" \
      -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
      -out "$dir/update-ca.pem" &&
    openssl ecparam -name prime256v1 -genkey -noout -out "$dir/signer.key" &&
    openssl req -new -key "$dir/signer.key" -subj "/CN=renkei throwaway $name bundle signer" \
      -out "$dir/signer.csr" &&
    printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
      > "$dir/signer.ext" &&
    openssl x509 -req -in "$dir/signer.csr" -CA "$dir/update-ca.pem" -CAkey "$dir/update-ca.key" \
      -extfile "$dir/signer.ext" -sha256 -days 30 -set_serial "0x$(openssl rand -hex 16)" \
      -out "$dir/signer.pem" 2>/dev/null
}
