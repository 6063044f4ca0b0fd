# shellcheck shell=bash
# image/boot-test: the box's journal, sealed from first boot on (LOG-4). Sourced by image/boot-test
# (its helpers and variables: attach_disk, detach_disk, pass, fail, RENKEI, WORK, LOOP,
# JOURNAL_KEY, the key first boot showed on the console), which calls the two checks below with
# the box off. Each copies the data partition's journal folder out (read-only mount, no journal
# replay) and checks the copy.
#
# journal_sealed: after boots 1 to 3 and the power cuts, before the clock steps of boot c1:
#   - one machine folder holds every boot's files: the machine id (the folder's and the sealing
#     key's name) survived root slot A's rewrite;
#   - `renkei journal-verify` with first boot's key passes every file: each sealed, each tag
#     right (journalctl --verify --verify-key); a power cut's unclean file (`*.journal~`) passes
#     with journalctl's "No sealing yet" when the cut came before its first seal;
#   - with a key one digit off, it fails;
#   - an edited copy: one of renkei's records is changed and the file re-written by
#     systemd-journal-remote, so every hash in it is right again (journalctl --verify without a
#     key passes it, and so does journalctl with the key: an unsealed file is not checked
#     against it) while `renkei journal-verify` fails it as not sealed.
# journal_fetch: with the box running, the operator fetches its journal files through the
#   management API (renkei remote ... journal) and every file but the active one verifies;
#   used in boot 2 and after the updates.
# journal_kept: at the end, after the clock steps and the firmware updates:
#   - the journal uploader's cursor is on the data partition;
#   - the archived files fetched through the management API after the updates are the disk's,
#     byte for byte;
#   - still one machine folder (rauc-post-install carried the id into the updated slots);
#   - the files archived before the clock steps that journald has not deleted for space (the
#     update bundles are spooled on the same partition) are there unchanged and still pass;
#   - a later file fails, if at all, only on entries dated before a seal: the box's clock went
#     31 days ahead and came back in boot c1, and journald cannot seal into the past
#     (docs/security.md, L5).
# In every check a file may also fail where one boot's entries that journald flushed from /run
# straddle a sealing interval's end (journald seals them only after the copy: L9);
# unexplained_by_straddle tells those apart from any other failure. Anything it cannot read is
# unexplained.
# Host tools: systemd's journalctl and systemd-journal-remote (scripts/install-deps).

JOURNAL_REMOTE=/lib/systemd/systemd-journal-remote

# unexplained_by_straddle: reads `renkei journal-verify` FAIL lines on stdin and prints those a
# flush straddling a sealing interval's end does not explain (docs/security.md, L9); prints
# what it explains on stderr. Explained is a failure at an entry E ("tag/entry realtime
# timestamp out of synchronization (E >= ...)", "Older entry after newer tag (E < ...)" or
# "Entry realtime (E, ...) is too early with respect to tag") where the entries of E's boot in
# that file from S (its first, or the first after journald's earlier flush or stop) to
# journald's first "Time spent on flushing" at F >= E hold an interval's end (the key's start
# and interval from JOURNAL_KEY): journald copied E from /run with the others of that boot,
# before it sealed any.
unexplained_by_straddle() {
  python3 -c '
import json, re, subprocess, sys

def straddled(line, start, interval):
    """The explanation when the failure in the line is a straddled flush, else None."""
    m = re.match(r"FAIL (.+?): journalctl --verify failed: .*?(?:tag/entry realtime timestamp out of synchronization \((\d+) >=|Older entry after newer tag \((\d+) <|Entry realtime \((\d+), [^)]*\) is too early with respect to tag)", line)
    if not m:
        return None
    path, e = m.group(1), int(m.group(2) or m.group(3) or m.group(4))
    out = subprocess.run(["journalctl", "--file=" + path, "-o", "json", "--no-pager",
                          "--output-fields=_BOOT_ID,SYSLOG_IDENTIFIER,MESSAGE"],
                         capture_output=True, text=True).stdout
    entries = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
    boot = next((x.get("_BOOT_ID") for x in entries if int(x["__REALTIME_TIMESTAMP"]) == e), None)
    if boot is None:
        return None
    ours = [x for x in entries if x.get("_BOOT_ID") == boot]
    times = [int(x["__REALTIME_TIMESTAMP"]) for x in ours]
    flushes = [i for i, x in enumerate(ours)
               if x.get("SYSLOG_IDENTIFIER") == "systemd-journald"
               and str(x.get("MESSAGE", "")).startswith("Time spent on flushing")]
    stops = [i for i, x in enumerate(ours)
             if x.get("SYSLOG_IDENTIFIER") == "systemd-journald"
             and str(x.get("MESSAGE", "")).startswith("Journal stopped")]
    # The flush that copied E, and where the entries it copied begin: after the flush or the
    # stop of journald before it, else at the first entry of the boot.
    at = next((i for i in flushes if times[i] >= e), None)
    if at is None:
        return None
    before = [i for i in flushes + stops if i < at]
    s, f = times[max(before) + 1 if before else 0], times[at]
    epoch = lambda t: (t - start) // interval
    if s <= e <= f and epoch(s) < epoch(f):
        return ("explained (L9): %s: entry %d of boot %s, which journald flushed at %d with its entries from %d, across the sealing interval that ended at %d"
                % (path, e, boot, f, s, start + epoch(f) * interval))
    return None

lines = [l.rstrip() for l in sys.stdin if l.strip()]
try:
    start_hex, interval_hex = sys.argv[1].split("/")[1].split("-")
    interval = int(interval_hex, 16)
    start = int(start_hex, 16) * interval
except Exception as error:
    print("unexplained_by_straddle: no key: %s" % error, file=sys.stderr)
    start = interval = None
for line in lines:
    try:
        why = straddled(line, start, interval) if interval else None
    except Exception as error:
        print("unexplained_by_straddle: %s: %s" % (line[:80], error), file=sys.stderr)
        why = None
    if why:
        print(why, file=sys.stderr)
    else:
        print(line)
' "$JOURNAL_KEY"
}

# copy_box_journal DEST: the box's machine journal folder, copied to DEST/<machine id>; sets
# MACHINE_JOURNAL to it and checks there is exactly one machine folder, with the sealing key;
# the journal uploader's state folder goes to DEST.upload.
copy_box_journal() {
  local dest="$1" machines
  attach_disk || fail "LOG-4 the test disk's partitions appear for the journal check"
  rm -rf "$dest"
  mkdir -p "$dest"
  # shellcheck disable=SC2016 # expanded by the inner shell
  unshare --mount --propagation private -- sh -euc '
    dir="$(mktemp -d)"
    mount -o ro,noload "$1" "$dir"
    cp -a "$dir/var/log/journal/." "$2/"
    mkdir -p "$3"
    cp -a "$dir/var/lib/journal-upload/." "$3/"
    umount "$dir"
    rmdir "$dir"
  ' copy_journal "${LOOP}p4" "$dest" "$dest.upload" || { detach_disk; fail "LOG-4 the box's journal folder can be read off its data partition"; }
  detach_disk
  machines="$(find "$dest" -mindepth 1 -maxdepth 1 -type d -printf '%f\n')"
  [ "$(echo "$machines" | grep -c .)" = 1 ] ||
    fail "LOG-4 one machine folder holds the journal of every boot (found: $(echo "$machines" | tr '\n' ' '))"
  MACHINE_JOURNAL="$dest/$machines"
  [ -e "$MACHINE_JOURNAL/fss" ] || fail "LOG-4 the sealing key is in the box's journal folder"
}

# journal_fetch DEST [clock-stepped]: the operator's `renkei remote ... journal --out DEST` from
# the data centre through the link (retried for up to 120 s), then `renkei journal-verify` of
# DEST with first boot's key. journald is writing the active files (system.journal) while they
# are copied, so a copy may end in a half-written entry: their result is shown, not judged;
# every other file must pass, after the clock test ("clock-stepped") but for entries dated
# before a seal (L5, as journal_kept). Sets FETCHED_FILES and FETCHED_SUMMARY for the caller.
journal_fetch() {
  local dest="$1" stepped="${2:-}" deadline bad
  deadline=$((SECONDS + 120))
  until rm -rf "$dest" && ( cd "$HANDOVER" && in_ns "$RENKEI" remote \
    --to "$BOX_TUNNEL_ADDRESS:$MANAGEMENT_PORT" --server-name "$BOX_NAME" --cert operator.crt \
    --key operator.key --ca operator-ca.crt --timeout-secs 60 journal --out "$dest" ) > "$dest.log" 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || { cat "$dest.log" >&2;
      fail "LOG-4 the operator fetches the box's journal files through the management API"; }
    sleep 2
  done
  cat "$dest.log"
  "$RENKEI" journal-verify --verify-key "$JOURNAL_KEY" "$dest" > "$dest.verify" 2>&1 || true
  cat "$dest.verify"
  FETCHED_FILES="$(find "$dest" -name '*.journal*' | grep -c .)" || true
  [ "$FETCHED_FILES" -gt 0 ] || fail "LOG-4 the box's management API lists journal files"
  bad="$(grep '^FAIL ' "$dest.verify" | grep -v -E '/(system|user-[0-9]+)\.journal: ')" || true
  if [ -n "$stepped" ]; then
    bad="$(grep -v -E 'Older entry after newer tag|too early with respect to tag' <<< "$bad")" || true
  fi
  [ -z "$bad" ] || bad="$(unexplained_by_straddle <<< "$bad")"
  [ -z "$bad" ] || fail "LOG-4 every journal file fetched from the box but the active one verifies with first boot's key: $bad"
  # shellcheck disable=SC2034 # read by the caller's pass line
  FETCHED_SUMMARY="$(tail -n 1 "$dest.verify")"
}

journal_sealed() {
  local files boots first other wrong_key victim f tampered plain_with_key
  copy_box_journal "$WORK/journal-1"
  files="$(find "$MACHINE_JOURNAL" -name '*.journal*' | wc -l)"
  boots="$(journalctl --directory="$MACHINE_JOURNAL" --list-boots --no-pager | grep -c .)" || true
  pass "LOG-4 the box's journal is persistent on the data partition: one machine folder over the root slot's rewrite, $files files, $boots boots, the sealing key beside them"

  local bad straddled=""
  "$RENKEI" journal-verify --verify-key "$JOURNAL_KEY" "$MACHINE_JOURNAL" > "$WORK/journal-verify.log" 2>&1 || true
  cat "$WORK/journal-verify.log"
  grep -q '^[0-9]* files, ' "$WORK/journal-verify.log" ||
    fail "LOG-4 renkei journal-verify checks the box's journal with first boot's verification key"
  bad="$(grep '^FAIL ' "$WORK/journal-verify.log" | unexplained_by_straddle)" || true
  [ -z "$bad" ] || fail "LOG-4 renkei journal-verify passes the box's journal with first boot's verification key: $bad"
  grep -q '^FAIL ' "$WORK/journal-verify.log" &&
    straddled=", $(grep -c '^FAIL ' "$WORK/journal-verify.log") failing only where a boot's flushed entries straddle a sealing interval's end (docs/security.md, L9)"
  pass "LOG-4 every journal file of the box is sealed and verifies with first boot's key ($(tail -n 1 "$WORK/journal-verify.log")$straddled)"
  # The clean archived files (those that passed), kept for the check at the end.
  grep -o -E '^PASS [^ ]*/system@[^ /]*\.journal ' "$WORK/journal-verify.log" |
    sed -E 's|^PASS .*/||; s| $||' | sort > "$WORK/journal-archived" || true

  # One hex digit of the seed changed.
  first="${JOURNAL_KEY:0:1}"
  if [ "$first" = 0 ]; then other=1; else other=0; fi
  wrong_key="$other${JOURNAL_KEY:1}"
  if "$RENKEI" journal-verify --verify-key "$wrong_key" "$MACHINE_JOURNAL" > "$WORK/journal-wrong.log" 2>&1; then
    cat "$WORK/journal-wrong.log" >&2
    fail "LOG-4 a wrong verification key fails the box's journal"
  fi
  grep -q "^FAIL .*Tag failed verification" "$WORK/journal-wrong.log" ||
    { cat "$WORK/journal-wrong.log" >&2; fail "LOG-4 a wrong key fails on a seal tag"; }
  pass "LOG-4 the same journal fails with a verification key one digit off"

  # The edit: the newest clean file holding one of renkei's records; its first renkei record's
  # MESSAGE gets other words.
  victim=""
  for f in $(find "$MACHINE_JOURNAL" -name 'system*.journal' -printf '%T@ %p\n' | sort -rn | cut -d ' ' -f 2-); do
    if [ -n "$(journalctl --file="$f" SYSLOG_IDENTIFIER=renkei -n 1 -q --no-pager)" ]; then victim="$f"; break; fi
  done
  [ -n "$victim" ] || fail "LOG-4 the box's journal holds renkei's records"
  journalctl --file="$victim" -o export > "$WORK/journal-export"
  python3 - "$WORK/journal-export" "$WORK/journal-edited" <<'PY'
import sys
data = open(sys.argv[1], "rb").read()
entries = data.split(b"\n\n")
for i, entry in enumerate(entries):
    fields = entry.split(b"\n")
    if b"SYSLOG_IDENTIFIER=renkei" in fields:
        for j, field in enumerate(fields):
            if field.startswith(b"MESSAGE="):
                fields[j] = b"MESSAGE=edited afterwards: nothing happened here"
                entries[i] = b"\n".join(fields)
                break
        else:
            continue
        break
else:
    sys.exit("no renkei record with a text MESSAGE")
open(sys.argv[2], "wb").write(b"\n\n".join(entries))
PY
  mkdir -p "$WORK/journal-tampered"
  tampered="$WORK/journal-tampered/$(basename "$victim")"
  "$JOURNAL_REMOTE" --seal=no --output="$tampered" - < "$WORK/journal-edited" > "$WORK/journal-remote.log" 2>&1 ||
    { cat "$WORK/journal-remote.log" >&2; fail "LOG-4 systemd-journal-remote re-writes the edited records"; }
  # Read whole first: with pipefail, grep -q ending early would fail journalctl (SIGPIPE).
  journalctl --file="$tampered" -q --no-pager > "$WORK/journal-tampered.txt"
  grep -q "edited afterwards" "$WORK/journal-tampered.txt" ||
    fail "LOG-4 the re-written file holds the edited record"
  journalctl --verify --file="$tampered" > "$WORK/journal-tampered-plain.log" 2>&1 ||
    { cat "$WORK/journal-tampered-plain.log" >&2; fail "LOG-4 the edited file's own hashes are right (journalctl --verify without a key)"; }
  plain_with_key=FAIL
  journalctl --verify --verify-key="$JOURNAL_KEY" --file="$tampered" > /dev/null 2>&1 && plain_with_key=PASS
  if "$RENKEI" journal-verify --verify-key "$JOURNAL_KEY" "$tampered" > "$WORK/journal-tampered.log" 2>&1; then
    cat "$WORK/journal-tampered.log" >&2
    fail "LOG-4 renkei journal-verify fails an edited, re-written journal file"
  fi
  grep -q "not sealed" "$WORK/journal-tampered.log" ||
    { cat "$WORK/journal-tampered.log" >&2; fail "LOG-4 the edited file is named not sealed"; }
  pass "LOG-4 an edited record re-written with systemd-journal-remote (its hashes right: journalctl --verify PASS, with the key $plain_with_key) fails renkei journal-verify: not sealed"
}

journal_kept() {
  local before f failures kept=0 vacuumed=0 moved seal_failed
  # renkei-journal-seal ran at every boot before journald's flush and moved the sealing key on
  # where the box was off past an interval's end or a power cut lost the last move (L9).
  seal_failed="$(cat "$WORK"/serial-*.log | tr -d '\r' | grep -a -E 'Failed to start .*renkei-journal-se')" || true
  [ -z "$seal_failed" ] || fail "LOG-4 renkei-journal-seal.service succeeds at every boot (console: $seal_failed)"
  moved="$(cat "$WORK"/serial-*.log | tr -d '\r' | grep -a -c "journal's sealing key moved on")" || true
  pass "LOG-4 renkei-journal-seal.service succeeded at every boot; it moved the sealing key on to the present before journald's flush at $moved boot(s)"
  copy_box_journal "$WORK/journal-2"
  # The uploader's cursor is on the data partition (a bind mount over its state folder), so a
  # new root slot goes on from the last entry the collector took instead of sending it all.
  grep -q '^LAST_CURSOR=' "$WORK/journal-2.upload/state" 2>/dev/null ||
    fail "LOG-4 the journal uploader's cursor is kept on the data partition (var/lib/journal-upload/state: $(cat "$WORK/journal-2.upload/state" 2>&1))"
  pass "LOG-4 the journal uploader's cursor is on the data partition, kept over the firmware updates"
  # The archived files the operator fetched through the management API after the updates
  # are the disk's, byte for byte (archived files never change).
  local fetched same=0
  for fetched in "$WORK"/journal-fetched-late/*/*.journal*; do
    case "$(basename "$fetched")" in system.journal | user-*.journal) continue ;; esac
    f="$MACHINE_JOURNAL/$(basename "$fetched")"
    # Deleted by journald for space since (L6): nothing to compare.
    [ -e "$f" ] || continue
    cmp -s "$fetched" "$f" || fail "LOG-4 the journal file fetched through the management API is the disk's, byte for byte ($(basename "$f"))"
    same=$((same + 1))
  done
  [ "$same" -gt 0 ] || fail "LOG-4 the management API sent archived journal files after the updates"
  pass "LOG-4 the $same archived journal file(s) the operator fetched through the management API after the updates are the data partition's, byte for byte"
  before="$(grep -c . "$WORK/journal-archived")" || true
  [ "$before" -gt 0 ] || fail "LOG-4 the first journal check kept the names of the archived files"
  while read -r f; do
    # journald deletes its oldest files itself when the data partition runs short (the
    # update bundles are spooled there): such a file is gone, never changed (L6).
    if [ ! -e "$MACHINE_JOURNAL/$f" ]; then vacuumed=$((vacuumed + 1)); continue; fi
    kept=$((kept + 1))
    cmp -s "$MACHINE_JOURNAL/$f" "$WORK/journal-1/$(basename "$MACHINE_JOURNAL")/$f" ||
      fail "LOG-4 the archived journal file $f is unchanged after the clock steps and the updates"
    "$RENKEI" journal-verify --verify-key "$JOURNAL_KEY" "$MACHINE_JOURNAL/$f" > "$WORK/journal-kept.log" 2>&1 ||
      { cat "$WORK/journal-kept.log" >&2; fail "LOG-4 the archived journal file $f still verifies after the updates"; }
  done < "$WORK/journal-archived"
  if [ "$vacuumed" -gt 0 ]; then
    # What journald said about deleting them (read whole: grep ending early under pipefail).
    journalctl --directory="$MACHINE_JOURNAL" -u systemd-journald --no-pager > "$WORK/journald.log" 2>&1 || true
    grep -i -E "vacuum|delet|free|space" "$WORK/journald.log" | tail -n 5 || true
  fi
  "$RENKEI" journal-verify --verify-key "$JOURNAL_KEY" "$MACHINE_JOURNAL" > "$WORK/journal-end.log" 2>&1 || true
  cat "$WORK/journal-end.log"
  failures="$(grep -c '^FAIL ' "$WORK/journal-end.log")" || true
  grep '^FAIL ' "$WORK/journal-end.log" | grep -v -E 'Older entry after newer tag|too early with respect to tag' |
    unexplained_by_straddle > "$WORK/journal-end-other.log" || true
  if [ -s "$WORK/journal-end-other.log" ]; then
    cat "$WORK/journal-end-other.log" >&2
    fail "LOG-4 after the updates a journal file fails only where the clock test dated entries before a seal"
  fi
  pass "LOG-4 after the clock steps and the firmware updates the journal is still one machine folder (the machine id went with the updated slots); of the $before files archived before the clock steps $kept are there unchanged and verify, $vacuumed were deleted by journald for space (docs/security.md, L6); $failures later file(s) fail only on entries dated before a seal (the clock went 31 days ahead and back: L5)"
}
