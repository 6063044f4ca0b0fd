# shellcheck shell=bash
# shellcheck disable=SC2154 # boot-test's variables (bundles, timings) are set before it sources this
# The firmware update boots of image/boot-test (AVL-5, OPS-2): sourced by it after boot 3 and the
# power cuts (image/boot-powerloss.sh), with
# its state (the namespace, the disk, the running concentrator, the operator's files in
# $HANDOVER) and helpers (boot, wait_for, power_off, remote, concentrator_sas, ...).
#
# The box runs version N (the image) on slot A with its pushed IPsec configuration, which has
# `[update]` (lab image-hub) and the update CA that the installer's guide, section 4, placed on
# partition 4. Through the SA, the operator's `renkei update push`:
#   N+1 ($VERSION.1): the box installs it into slot B (RAUC, the image's bootloader backend and
#     post-install handler), reboots, boots B once, its health check passes and blesses B:
#     `renkei update status` shows booted B, version N+1, last result blessed; the ESP's entry
#     renkei-b.conf has no boot counter left. N+1 carries the transition keyring (the first
#     update CA and a second one, image/bundle --keyring): the blessing makes it RAUC's keyring
#     /data/rauc/update-ca.pem (the rotation of the update CA through signed firmware).
#   broken N+2 ($VERSION.2, its renkei.service fails), signed by the second update CA: refused
#     (not_verified) before the rotation, accepted after it; installed into A, booted once, its
#     health check fails, the box reboots and boots N+1 on B by itself: fell_back, with the
#     reason.
#   N+2 again, and the machine is killed (QEMU SIGKILL: a power cut) while RAUC writes slot A
#     (the guest's disk writes, QEMU's blockstats, grow past a slot's worth of megabytes after
#     `installing` shows): the box boots N+1 again and reports interrupted.
# The data partition's configuration, keys and state files (all but the update spool) keep
# their sha256 at every reboot, RAUC's keyring until the rotation and the transition keyring
# from then on (QEMU runs with -no-reboot: each guest reboot ends it, and the
# test reads the disk before starting it again).
# Prints the timings docs/benchmarks.md records.

# Writes of the guest's disk after `installing` shows that mean RAUC is writing the slot: more
# than the received bundle's late writeback (some 63 MiB) and well below the 1 GiB slot.
INTERRUPT_AFTER_WRITTEN_MIB=256
# Bound of an install (the push's answer to the reboot).
INSTALL_TIMEOUT_SECS=900
# The health check's deadline in the box's [update] (lab image-hub) and a margin for the
# broken slot's boot and reboot.
FALLBACK_TIMEOUT_SECS=600

# monitor COMMAND: one HMP command on the QEMU monitor; prints its answer.
monitor() {
  python3 - "$MONITOR" "$1" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode() + b"\n")
seen = b""
while seen.count(b"(qemu)") < 2:
    data = s.recv(65536)
    if not data:
        break
    seen += data
s.close()
print(seen.decode(errors="replace").replace("\r", ""))
EOF
}

# disk_written_bytes: bytes the guest has written to its disk (virtio0; the firmware's pflash
# devices come first in the list) since QEMU started.
disk_written_bytes() {
  local stats
  stats="$(monitor "info blockstats")" || return 1
  printf '%s\n' "$stats" | grep -a '^virtio0:' | grep -o -E 'wr_bytes=[0-9]+' | cut -d= -f2
}

# update_status: the operator's `renkei update status` through the SA; prints one line
# "booted_slot firmware_version checked_this_boot installing last_result" and then the last
# result's message on a second line.
update_status() {
  local out
  out="$( cd "$HANDOVER" && in_ns "$RENKEI" update status --to "$BOX_TUNNEL_ADDRESS:$MANAGEMENT_PORT" \
    --server-name "$BOX_NAME" --cert operator.crt --key operator.key --ca operator-ca.crt \
    --timeout-secs 10 2>&1 )" || return 1
  printf '%s\n' "$out" | python3 -c '
import json, sys
text = sys.stdin.read()
doc = json.loads(text[text.index("{"):])
last = doc.get("last_result") or {}
print(doc.get("booted_slot"), doc.get("firmware_version"), str(doc.get("checked_this_boot")).lower(),
      "yes" if doc.get("installing") else "no", last.get("result", "none"))
print(" ".join(str(last.get("message", "")).split()))
'
}

# wait_update_status PATTERN: polls update_status until its first line matches the extended
# regex PATTERN or the boot's deadline; prints the last answer (both lines).
wait_update_status() {
  local answer=""
  while [ "$SECONDS" -lt "$BOOT_DEADLINE" ]; do
    if answer="$(update_status)" && [[ "$(head -n 1 <<< "$answer")" =~ $1 ]]; then
      printf '%s\n' "$answer"
      return 0
    fi
    kill -0 "$QEMU_PID" 2>/dev/null || break
    sleep 2
  done
  printf '%s\n' "${answer:-no answer}"
  return 1
}

# push_bundle FILE: the operator's `renkei update push` through the SA; prints its answer.
push_bundle() {
  ( cd "$HANDOVER" && in_ns "$RENKEI" update push --to "$BOX_TUNNEL_ADDRESS:$MANAGEMENT_PORT" \
    --server-name "$BOX_NAME" --cert operator.crt --key operator.key --ca operator-ca.crt \
    --timeout-secs 300 "$1" 2>&1 )
}

# wait_reboot TIMEOUT: waits for the guest to reboot by itself (QEMU exits: -no-reboot).
wait_reboot() {
  local deadline=$((SECONDS + $1))
  while kill -0 "$QEMU_PID" 2>/dev/null; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.5
  done
  wait "$QEMU_PID" || true
  QEMU_PID=""
  REBOOTED_AT=$(date +%s.%N)
  serial_has "reboot: Restarting system"
}

# esp_listing: the ESP's entries and top folders, one name per line (mtools in the tools root).
esp_listing() {
  in_tools "$TOOLS" "$WORK" mdir -b -i "/work/disk.img@@${ESP_START_MIB}M" ::/loader/entries &&
    in_tools "$TOOLS" "$WORK" mdir -b -i "/work/disk.img@@${ESP_START_MIB}M" ::/
}

# The transition keyring once the blessing of N+1 installed it (set after that blessing).
ROTATED_KEYRING=""

# same_data WHEN: the data partition's hashes are those recorded before the first push; once
# the update CA is rotated, RAUC's keyring is checked against the transition keyring instead.
same_data() {
  data_hashes > "$WORK/data-hashes.now" ||
    fail "OPS-2 the data partition is readable $1"
  local before="$WORK/data-hashes.before" now="$WORK/data-hashes.now" installed wanted
  if [ -n "$ROTATED_KEYRING" ]; then
    installed="$(grep ' rauc/update-ca.pem$' "$now" | cut -d ' ' -f 1)"
    wanted="$(sha256sum < "$ROTATED_KEYRING" | cut -d ' ' -f 1)"
    [ "$installed" = "$wanted" ] ||
      fail "AVL-5 /data/rauc/update-ca.pem holds the transition keyring $1 (sha256 ${installed:-none}, wanted $wanted)"
    grep -v ' rauc/update-ca.pem$' "$before" > "$WORK/data-hashes.before-rest"
    grep -v ' rauc/update-ca.pem$' "$now" > "$WORK/data-hashes.now-rest"
    before="$WORK/data-hashes.before-rest" now="$WORK/data-hashes.now-rest"
  fi
  if ! diff -u "$before" "$now" >&2; then
    fail "OPS-2 the configuration, keys and state files on the data partition are unchanged $1"
  fi
}

# seconds_since T0: seconds from the date +%s.%N time T0 to now.
seconds_since() { python3 -c "import sys, time; print(f'{time.time() - float(sys.argv[1]):.1f}')" "$1"; }

UPDATE_N1="$VERSION.1"
UPDATE_N2="$VERSION.2"

# --- before the first push: the data partition's files --------------------------------------------
data_hashes > "$WORK/data-hashes.before" || fail "OPS-2 the data partition is readable before the updates"
grep -q ' rauc/update-ca.pem$' "$WORK/data-hashes.before" ||
  fail "AVL-5 the installer's guide, section 4, placed the update CA at /data/rauc/update-ca.pem"
grep -q ' etc/renkei/wg.key$' "$WORK/data-hashes.before" ||
  fail "OPS-2 the WireGuard key is among the hashed files"
data_files=$(wc -l < "$WORK/data-hashes.before")

# --- boot 4: version N on slot A; the operator pushes N+1 ------------------------------------------
boot 4
fresh_sa || fail "AVL-5 the box on version $VERSION brings its SA up (boot 4)"
status_line="$(wait_update_status "^A $VERSION true no ")" ||
  fail "AVL-5 renkei update status through the SA shows slot A, version $VERSION, this boot checked, no install (got: $status_line)"
pass "AVL-5 OPS-2 renkei update status through the SA: booted slot A, firmware $VERSION, this boot's health check has run, no install under way"
# Before the rotation the second update CA is not trusted: its bundle is refused.
if push_out="$(push_bundle "$BUNDLE_N2")" || [[ "$push_out" != *not_verified* ]]; then
  printf '%s\n' "$push_out" >&2
  fail "AVL-5 before the rotation the box refuses $UPDATE_N2, signed by the second update CA, as not_verified"
fi
pass "AVL-5 before the rotation the box refuses $UPDATE_N2, signed by a second update CA it does not trust yet: not_verified"
push_start=$(date +%s.%N)
push_out="$(push_bundle "$BUNDLE_N1")" || {
  printf '%s\n' "$push_out" >&2
  fail "AVL-5 the operator's renkei update push of $UPDATE_N1 is accepted"
}
[[ "$push_out" == *accepted* ]] || { printf '%s\n' "$push_out" >&2; fail "AVL-5 the push of $UPDATE_N1 answers accepted"; }
t_push_n1="$(seconds_since "$push_start")"
pass "AVL-5 the operator's renkei update push sent the signed bundle $UPDATE_N1 ($bundle_n1_mib MiB) through the SA and the box accepted it (${t_push_n1} s)"
wait_reboot "$INSTALL_TIMEOUT_SECS" ||
  fail "AVL-5 the box installs $UPDATE_N1 into slot B and reboots by itself (renkei-update.service)"
t_install_n1="$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$push_start" "$REBOOTED_AT")"
esp_listing > "$WORK/esp.n1" || fail "AVL-5 the ESP is readable after the install"
if ! grep -q -x "::/loader/entries/renkei-a.conf" "$WORK/esp.n1" ||
  ! grep -q -x "::/loader/entries/renkei-b+1.conf" "$WORK/esp.n1" ||
  ! grep -q -x "::/renkei-b-$UPDATE_N1/" "$WORK/esp.n1"; then
  fail "AVL-5 the install left A's entry and wrote B's kernel folder renkei-b-$UPDATE_N1 and entry renkei-b+1.conf (ESP: $(tr '\n' ' ' < "$WORK/esp.n1"))"
fi
same_data "after the install of $UPDATE_N1"
pass "AVL-5 the box wrote $UPDATE_N1 into slot B and rebooted ${t_install_n1} s after the push began; the ESP has renkei-a.conf untouched, renkei-b-$UPDATE_N1/ and renkei-b+1.conf (one try); the $data_files config, key and state files are unchanged"

# --- boot 5: the trial boot of N+1 on slot B, blessed ----------------------------------------------
boot 5
fresh_sa || fail "AVL-5 the trial boot of $UPDATE_N1 brings the SA up"
t_down_n1="$(seconds_since "$REBOOTED_AT")"
status_line="$(wait_update_status "^B $UPDATE_N1 true no blessed$")" ||
  fail "AVL-5 the trial boot of $UPDATE_N1 on slot B passes its health check and is blessed (renkei update status: $status_line)"
t_bless_n1="$(elapsed)"
pass "AVL-5 OPS-2 the box boots $UPDATE_N1 on slot B once, its health check passes (renkei, its configuration, the IPsec SA) and blesses it: renkei update status shows booted B, firmware $UPDATE_N1, last result blessed (blessed ${t_bless_n1} s into the boot; reboot to SA up ${t_down_n1} s)"
blessed_why="$(tail -n 1 <<< "$status_line")"
[[ "$blessed_why" == *"update CA keyring replaced: 2 certificates"* ]] ||
  fail "AVL-5 the blessing of $UPDATE_N1 installed its transition keyring and says so (last result: $blessed_why)"
ROTATED_KEYRING="$UPDATE_KEYRING"

# --- still boot 5: the operator pushes the broken N+2 ----------------------------------------------
push_out="$(push_bundle "$BUNDLE_N2")" || {
  printf '%s\n' "$push_out" >&2
  fail "AVL-5 the box on blessed $UPDATE_N1 accepts the push of $UPDATE_N2"
}
[[ "$push_out" == *accepted* ]] || { printf '%s\n' "$push_out" >&2; fail "AVL-5 the push of $UPDATE_N2 answers accepted"; }
pass "AVL-5 the update CA was rotated through signed firmware: the blessed $UPDATE_N1 ($blessed_why) made its transition keyring RAUC's, and the box now accepts $UPDATE_N2, signed by the second update CA it refused before"
wait_reboot "$INSTALL_TIMEOUT_SECS" ||
  fail "AVL-5 the box installs the broken $UPDATE_N2 into slot A and reboots by itself"
esp_listing > "$WORK/esp.n2" || fail "AVL-5 the ESP is readable after the install of $UPDATE_N2"
grep -q -x "::/loader/entries/renkei-b.conf" "$WORK/esp.n2" ||
  fail "AVL-5 the blessing renamed B's entry to renkei-b.conf, no counter (ESP: $(tr '\n' ' ' < "$WORK/esp.n2"))"
if ! grep -q -x "::/loader/entries/renkei-a+1.conf" "$WORK/esp.n2" ||
  ! grep -q -x "::/renkei-a-$UPDATE_N2/" "$WORK/esp.n2"; then
  fail "AVL-5 the install of $UPDATE_N2 wrote renkei-a-$UPDATE_N2/ and renkei-a+1.conf (ESP: $(tr '\n' ' ' < "$WORK/esp.n2"))"
fi
! grep -q -x "::/renkei-a/" "$WORK/esp.n2" ||
  fail "AVL-5 the old slot A's kernel folder renkei-a/ went once no entry named it (ESP: $(tr '\n' ' ' < "$WORK/esp.n2"))"
same_data "after the install of $UPDATE_N2"
pass "AVL-5 after the blessing of $UPDATE_N1, /data/rauc/update-ca.pem on the powered-off disk holds its transition keyring (both update CAs, sha256 $(sha256sum < "$ROTATED_KEYRING" | cut -c 1-16)...)"
pass "AVL-5 the blessed entry is renkei-b.conf (no counter); the broken $UPDATE_N2 went into slot A with renkei-a-$UPDATE_N2/ and renkei-a+1.conf, the first image's renkei-a/ is gone; data files unchanged"

# --- boot 6: the trial boot of the broken N+2 fails; the box goes back by itself --------------------
boot 6
trial_start="$BOOT_START"
wait_reboot "$FALLBACK_TIMEOUT_SECS" ||
  fail "AVL-5 the trial boot of the broken $UPDATE_N2 fails its health check and reboots by itself"
esp_listing > "$WORK/esp.n2b" || fail "AVL-5 the ESP is readable after the failed trial"
! grep -q "::/loader/entries/renkei-a" "$WORK/esp.n2b" ||
  fail "AVL-5 the failed health check marked slot A bad: its entry is gone (ESP: $(tr '\n' ' ' < "$WORK/esp.n2b"))"
same_data "after the failed trial of $UPDATE_N2"
boot 7
fresh_sa || fail "AVL-5 after the fallback the box on $UPDATE_N1 brings the SA up by itself"
t_fallback="$(seconds_since "$trial_start")"
answer="$(wait_update_status "^B $UPDATE_N1 true no fell_back$")" ||
  fail "AVL-5 the box fell back to $UPDATE_N1 on slot B and reports fell_back (renkei update status: $answer)"
why="$(tail -n 1 <<< "$answer")"
[ -n "$why" ] || fail "AVL-5 the fell_back result says why"
pass "AVL-5 OPS-2 the broken $UPDATE_N2 booted once on slot A, failed its health check, the box rebooted and booted $UPDATE_N1 on slot B by itself (default entry) and reports fell_back: $why (trial boot start to SA up again ${t_fallback} s)"

# --- still boot 7: a power cut while RAUC writes the slot ----------------------------------------
push_out="$(push_bundle "$BUNDLE_N2")" || {
  printf '%s\n' "$push_out" >&2
  fail "AVL-5 the box accepts $UPDATE_N2 again after the fallback"
}
# renkei update status while the install runs: slot B booted, checked, installing.
INSTALLING_RE='^B [^ ]+ true yes '
installing=""
written_at_start=""
install_deadline=$((SECONDS + INSTALL_TIMEOUT_SECS))
while [ "$SECONDS" -lt "$install_deadline" ]; do
  if [ -z "$written_at_start" ]; then
    line="$(update_status)" || line=""
    line="${line%%$'\n'*}"
    if [[ "$line" =~ $INSTALLING_RE ]]; then
      installing="$line"
      written_at_start="$(disk_written_bytes)" || written_at_start=""
    fi
  else
    kill -0 "$QEMU_PID" 2>/dev/null || fail "AVL-5 the box was still installing when the power was cut (it rebooted first)"
    written="$(disk_written_bytes)" || written="$written_at_start"
    if [ $(( (written - written_at_start) / 1048576 )) -ge "$INTERRUPT_AFTER_WRITTEN_MIB" ]; then break; fi
  fi
  kill -0 "$QEMU_PID" 2>/dev/null || fail "AVL-5 the box was still installing when the power was cut (it rebooted first)"
  sleep 0.5
done
if [ -z "$written_at_start" ] || [ "$SECONDS" -ge "$install_deadline" ]; then
  fail "AVL-5 renkei update status shows the install under way and the guest writes the slot ($installing)"
fi
kill -KILL "$QEMU_PID"
wait "$QEMU_PID" 2>/dev/null || true
QEMU_PID=""
pass "AVL-5 the power was cut (QEMU killed) while renkei update status showed the install of $UPDATE_N2 under way and the guest had written $(( (written - written_at_start) / 1048576 )) MiB since"
same_data "after the power cut"
boot 8
fresh_sa || fail "AVL-5 after the power cut mid-install the box boots and brings the SA up"
answer="$(wait_update_status "^B $UPDATE_N1 true no interrupted$")" ||
  fail "AVL-5 after the power cut the box runs $UPDATE_N1 on slot B and reports interrupted (renkei update status: $answer)"
pass "AVL-5 OPS-2 after a power cut while RAUC wrote slot A the box booted $UPDATE_N1 on slot B and reports interrupted: $(tail -n 1 <<< "$answer")"
# LOG-4: after every reboot, power cut and update the operator fetches the journal through the SA
# (archived files now); journal_kept compares them with the disk.
journal_fetch "$WORK/journal-fetched-late" clock-stepped
pass "LOG-4 AUTH-2 after the updates the operator fetches the box's $FETCHED_FILES journal file(s) through the SA and every archived one verifies with first boot's key but for entries dated before a seal by the clock test ($FETCHED_SUMMARY)"
power_off
same_data "after the updates, the fallback and the power cut"
pass "OPS-2 the $data_files configuration, key and state files of the data partition kept their sha256 through two installs, a blessing, a fallback and a power cut"
echo "image/boot-test: updates: bundle $UPDATE_N1 ${bundle_n1_mib} MiB (image .img.xz ${image_xz_mib} MiB), bundle made in ${t_bundle} s, push ${t_push_n1} s, push to reboot (install) ${t_install_n1} s, reboot to SA up ${t_down_n1} s, trial boot to blessed ${t_bless_n1} s, broken trial boot to SA up again on the old slot ${t_fallback} s ($ACCEL)"
