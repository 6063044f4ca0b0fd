# shellcheck shell=bash
# shellcheck disable=SC2154 # boot-test's variables (the namespace, the operator's files) are set before it sources this
# Power cuts during a config push (INT-2, AVL-1): sourced by image/boot-test after boot 3, with
# its state and helpers: the box is powered off, with the pushed IPsec configuration (version 2,
# confirmed, auto_confirm), the concentrator is up and the operator's files are in $HANDOVER.
# The boots are p1, p2, ... (serial-pN.log).
#
# Each round, on a box whose SA is up, the operator signs the next version of the configuration
# and pushes it through the SA (`renkei push`, which reads the state back: with auto_confirm
# that request confirms it), and then reads the state again until it shows the new version
# confirmed. At a random moment of that (seeded; the seed is printed and
# RENKEI_POWERLOSS_SEED repeats a run) QEMU is killed: the power is cut, the guest's page cache
# and its disk writes in flight are lost. The box then boots again, and must:
#   - bring its SA up and answer the operator: running version confirmed, the old version or the
#     new one, and the new one whenever the operator had seen it confirmed before the cut;
#   - run byte-for-byte the file the operator signed for that version (the sha256 the box
#     reports is that of the operator's file).
# After the last round the box is powered off and its data partition is read: the config file
# is the last confirmed version's, no temporary file is left, and the keys, certificates and
# every other file outside the push's own state kept their sha256.
# RENKEI_POWERLOSS_RESETS sets the number of cuts (default 5, what CI runs; 50 or more for the
# report in docs/reliability.md).

POWERLOSS_RESETS="${RENKEI_POWERLOSS_RESETS:-5}"
POWERLOSS_SEED="${RENKEI_POWERLOSS_SEED:-$(( $(date +%s) % 32768 ))}"
# Bound of one push and its confirm (a calibration push, before the cuts).
PUSH_TIMEOUT_SECS=120
# The files of a push's own state (data_hashes' paths): the configuration and the push records.
# The rest of the data partition (keys, certificates, trust anchors) must not change.
PUSH_STATE_FILES_RE='etc/renkei/renkei\.toml|var/lib/renkei/config/[^ ]*'

# config_version VERSION FILE: writes the operator's configuration with meta.version VERSION.
config_version() {
  python3 - "$HANDOVER/hospital-a.toml" "$1" "$2" <<'EOF'
import re, sys
source, version, out = sys.argv[1], sys.argv[2], sys.argv[3]
text = open(source).read()
meta = text.index("[meta]")
head, tail = text[:meta], text[meta:]
tail, count = re.subn(r"(?m)^version = [0-9]+$", f"version = {version}", tail, count=1)
if count != 1:
    sys.exit(f"{source}: no meta.version line")
open(out, "w").write(head + tail)
EOF
}

# last_state: "VERSION STATE" of the last JSON document on standard input that has a state (the
# read-back `renkei push` prints after the box's answer).
last_state() {
  python3 -c '
import json, sys
text, decoder, at, last = sys.stdin.read(), json.JSONDecoder(), 0, None
while (start := text.find("{", at)) >= 0:
    try:
        doc, at = decoder.raw_decode(text, start)
    except ValueError:
        at = start + 1
        continue
    if isinstance(doc, dict) and "state" in doc:
        last = doc
if last is not None:
    print(last.get("version"), last.get("state"))
'
}

# push_and_watch DIR FILE VERSION: the operator's push of FILE, then its requests until the box
# reports VERSION confirmed; DIR/seen-confirmed is created once an answer said so. Runs in the
# background; the power cut ends it.
push_and_watch() {
  local dir="$1" file="$2" version="$3" state
  ( cd "$HANDOVER" && in_ns "$RENKEI" push --to "$BOX_TUNNEL_ADDRESS:$MANAGEMENT_PORT" \
    --server-name "$BOX_NAME" --cert operator.crt --key operator.key --ca operator-ca.crt \
    --timeout-secs 10 "$file" ) > "$dir/push.log" 2>&1 && touch "$dir/push-answered"
  if [ "$(last_state < "$dir/push.log")" = "$version confirmed" ]; then
    touch "$dir/seen-confirmed"
    return
  fi
  local deadline=$((SECONDS + 120))
  while [ "$SECONDS" -lt "$deadline" ]; do
    if state="$(running_config)" && [ "${state% *}" = "$version confirmed" ]; then
      touch "$dir/seen-confirmed"
      return
    fi
    sleep 0.2
  done
}

# sign_version VERSION DIR: writes and signs the operator's configuration VERSION (its log in
# DIR); sets SIGNED_FILE to the file's name in $HANDOVER and records its sha256.
sign_version() {
  local file="hospital-a-v$1.toml"
  config_version "$1" "$HANDOVER/$file" || fail "INT-2 the operator's configuration version $1"
  ( cd "$HANDOVER" && "$RENKEI" sign --key operator-signing.key "$file" ) > "$2/sign.log" 2>&1 ||
    { cat "$2/sign.log" >&2; fail "AUTH-4 renkei sign signs configuration version $1"; }
  config_sha[$1]="$(sha256sum < "$HANDOVER/$file" | cut -d ' ' -f 1)"
  SIGNED_FILE="$file"
}

# data_files_now: the data partition's hashes now (the box powered off), into FILE.
data_files_now() {
  data_hashes > "$1" || fail "INT-2 the data partition is readable $2"
}

data_files_now "$WORK/powerloss-before" "before the power cuts"
declare -A config_sha=()
config_sha[2]="$(sha256sum < "$HANDOVER/hospital-a.toml" | cut -d ' ' -f 1)"
confirmed_version=2
RANDOM=$POWERLOSS_SEED
echo "image/boot-test: $POWERLOSS_RESETS power cuts during config pushes, seed $POWERLOSS_SEED (RENKEI_POWERLOSS_SEED repeats them)"
cuts_before_answer=0 cuts_answered=0 cuts_after_confirmed=0 kept_old=0 took_new=0
boot_number=1
boot "p$boot_number"
fresh_sa || fail "INT-2 the box brings its SA up (boot p$boot_number)"

# Calibration: one push without a cut, timed from its start to the operator seeing it
# confirmed. The cuts fall within that time and a quarter more, so most land inside the push,
# its apply and its confirm, some after it.
calibration_dir="$WORK/powerloss-0"
rm -rf "$calibration_dir"
mkdir -p "$calibration_dir"
next=$((confirmed_version + 1))
sign_version "$next" "$calibration_dir"
push_started_ms=$(date +%s%3N)
push_and_watch "$calibration_dir" "$SIGNED_FILE" "$next" &
PUSH_PID=$!
push_deadline=$((SECONDS + PUSH_TIMEOUT_SECS))
until [ -e "$calibration_dir/seen-confirmed" ]; do
  if [ "$SECONDS" -ge "$push_deadline" ]; then
    cat "$calibration_dir/push.log" >&2
    fail "INT-2 AVL-1 the operator's push of version $next through the SA is confirmed (auto_confirm) without a power cut"
  fi
  sleep 0.05
done
push_ms=$(( $(date +%s%3N) - push_started_ms ))
wait "$PUSH_PID" 2>/dev/null || true
PUSH_PID=""
confirmed_version=$next
window_ms=$(( push_ms + push_ms / 4 + 1 ))
pass "INT-2 AVL-1 the operator's push of version $next through the SA was seen confirmed $push_ms ms after it began (no cut); the cuts fall within $window_ms ms of a push's start"

for ((round = 1; round <= POWERLOSS_RESETS; round++)); do
  fresh_sa || fail "INT-2 the box brings its SA up (power-cut round $round, boot p$boot_number)"
  next=$((confirmed_version + 1))
  round_dir="$WORK/powerloss-$round"
  rm -rf "$round_dir"
  mkdir -p "$round_dir"
  sign_version "$next" "$round_dir"
  file="$SIGNED_FILE"
  delay_ms=$(( (RANDOM * 32768 + RANDOM) % window_ms ))
  push_and_watch "$round_dir" "$file" "$next" &
  PUSH_PID=$!
  cut_at=$(( $(date +%s%3N) + delay_ms ))
  while [ "$(date +%s%3N)" -lt "$cut_at" ]; do sleep 0.02; done
  # What the operator knew at the cut decides what the box must run after it.
  if [ -e "$round_dir/seen-confirmed" ]; then
    phase="after the operator saw version $next confirmed"
    cuts_after_confirmed=$((cuts_after_confirmed + 1))
  elif [ -e "$round_dir/push-answered" ]; then
    phase="after the push was answered, before it was seen confirmed"
    cuts_answered=$((cuts_answered + 1))
  else
    phase="before the push was answered"
    cuts_before_answer=$((cuts_before_answer + 1))
  fi
  kill -KILL "$QEMU_PID"
  wait "$QEMU_PID" 2>/dev/null || true
  QEMU_PID=""
  stop_process "$PUSH_PID"
  PUSH_PID=""
  boot_number=$((boot_number + 1))
  boot "p$boot_number"
  fresh_sa || fail "INT-2 after a power cut during a config push the box boots and brings its SA up (round $round, cut $delay_ms ms into the push, $phase)"
  answer="$(remote_config)" || fail "INT-2 the operator reaches the box after the power cut (round $round)"
  read -r version state sha <<< "$answer"
  if [ "$state" != confirmed ] || { [ "$version" != "$confirmed_version" ] && [ "$version" != "$next" ]; }; then
    fail "INT-2 AVL-1 after a power cut $delay_ms ms into the push of version $next ($phase) the box runs version $confirmed_version or $next, confirmed (it reports: $answer)"
  fi
  if [ -e "$round_dir/seen-confirmed" ] && [ "$version" != "$next" ]; then
    fail "INT-2 AVL-1 a push the operator saw confirmed before the power cut survives it (round $round: the box runs version $version)"
  fi
  [ "$sha" = "${config_sha[$version]}" ] ||
    fail "INT-2 after the power cut the box runs byte-for-byte the file signed for version $version (box: $sha, operator's file: ${config_sha[$version]})"
  if [ "$version" = "$next" ]; then took_new=$((took_new + 1)); else kept_old=$((kept_old + 1)); fi
  pass "INT-2 AVL-1 power cut $round of $POWERLOSS_RESETS, $delay_ms ms into the push of version $next ($phase): the box booted, brought its SA up and runs version $version confirmed, byte-for-byte the operator's signed file"
  confirmed_version="$version"
done
power_off
data_files_now "$WORK/powerloss-after" "after the power cuts"
if grep -E ' [^ ]*\.tmp$' "$WORK/powerloss-after" >&2; then
  fail "INT-2 no half-written file is left on the data partition after the power cuts"
fi
on_disk="$(grep ' etc/renkei/renkei\.toml$' "$WORK/powerloss-after" | cut -d ' ' -f 1)"
[ "$on_disk" = "${config_sha[$confirmed_version]}" ] ||
  fail "INT-2 the data partition's renkei.toml is the running version $confirmed_version's signed file (disk: ${on_disk:-none})"
grep -v -E "  ($PUSH_STATE_FILES_RE)\$" "$WORK/powerloss-before" > "$WORK/powerloss-before-rest"
grep -v -E "  ($PUSH_STATE_FILES_RE)\$" "$WORK/powerloss-after" > "$WORK/powerloss-after-rest"
diff -u "$WORK/powerloss-before-rest" "$WORK/powerloss-after-rest" >&2 ||
  fail "INT-2 the keys, certificates and trust anchors on the data partition are unchanged by the power cuts"
pass "INT-2 AVL-1 after $POWERLOSS_RESETS power cuts during config pushes (seed $POWERLOSS_SEED; $cuts_before_answer before the push was answered, $cuts_answered before it was seen confirmed, $cuts_after_confirmed after; $kept_old kept the old version, $took_new took the new one) the powered-off data partition holds version $confirmed_version's signed file, no temporary file, and $(wc -l < "$WORK/powerloss-before-rest") key, certificate and trust files unchanged"
