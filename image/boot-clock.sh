# shellcheck shell=bash
# shellcheck disable=SC2154 # boot-test's variables (the namespace, the operator's files) are set before it sources this
# The box's wall clock stepped by days inside the booted image (INT-2): sourced by
# image/boot-test after the power cuts (image/boot-powerloss.sh), with its state and helpers:
# the box is powered off and runs version $confirmed_version of the IPsec configuration,
# confirmed. The boot is c1 (serial-c1.log).
#
# The host's clock is never touched (it is every test's clock). The box takes its time from the
# data centre's NTP server through the SA, as a real box does (the config's [time]; the image's
# systemd-timesyncd, set up by `renkei timesync-conf`). The lab's NTP server is chronyd on the
# concentrator's tunnel address, run under libfaketime: changing the offset it reads moves
# the data centre's time, and the box's timesyncd steps the box's clock to it.
#   1. The operator pushes version N+1 with [time] (auto_confirm): it is confirmed and the box's
#      clock is synchronized, within a minute of the host's.
#   2. The operator pushes N+2 without auto_confirm, confirm window $CLOCK_CONFIRM_SECS s, and
#      confirms nothing. The data centre's clock jumps 3 days ahead: the box's clock follows,
#      its certificates count 3 days fewer, and the push is still pending (no early rollback).
#   3. The data centre's clock goes back 2 days: the box's clock follows; still pending.
#   4. The box rolls N+2 back to N+1 when the window ends, measured on the host's clock from
#      the push: not before it, and within a minute after (not pushed out by the steps).
#   5. The data centre's clock jumps 31 days ahead, past the end of the operator's certificate
#      and CA (30 days, made by the boot test): the box, whose clock follows, refuses the
#      operator's handshake and the operator's `renkei fleet status` says why
#      (`certificate_expired`), though by the operator's own clock the certificate is valid.
#   6. The data centre's clock is the host's again, so is the box's: the operator reaches it
#      again (its running config unchanged); the box is powered off.

# The pending push's confirm window: long enough for two steps at timesyncd's 16 s polls under
# TCG (they took 3 and 16 s here), and it is the time the rollback is awaited.
CLOCK_CONFIRM_SECS=90
# How close the box's clock must come to the data centre's to count as stepped (the fleet
# status is read through the SA, under TCG).
CLOCK_TOLERANCE_SECS=30
# How long a step may take to reach the box: timesyncd polls every 16 s here; a restart of
# timesyncd (a pushed config) resets its poll.
CLOCK_STEP_TIMEOUT_SECS=120
NTP_TOOLS="$ROOT/target/tools/ntp"
NTP_PID=""
CAPTURE_PID=""

# ntp_exchanges: the NTP packets the data centre's server saw and sent (a failure's evidence).
ntp_exchanges() {
  [ -z "$CAPTURE_PID" ] || { stop_process "$CAPTURE_PID"; CAPTURE_PID=""; }
  tcpdump -n -tttt -r "$WORK/ntp/ntp.pcap" 2>/dev/null | tail -n 40 >&2 || true
}

# start_ntp: starts the data centre's NTP server on the concentrator's tunnel address, its
# clock the host's shifted by what $WORK/ntp/offset says (libfaketime reads that file at every
# clock read; the host's clock and the server's monotonic clock are untouched).
start_ntp() {
  mkdir -p "$WORK/ntp"
  rm -f "$WORK/ntp/chronyd.pid"
  ntp_offset "+0"
  cat > "$WORK/ntp/chrony.conf" <<EOF
# The data centre's NTP server for the box (image/boot-clock.sh): its own clock, stratum 1.
local stratum 1
allow all
bindaddress $HUB_TUNNEL_ADDRESS
bindcmdaddress /
cmdport 0
pidfile $WORK/ntp/chronyd.pid
EOF
  in_ns env LD_PRELOAD="$(find "$NTP_TOOLS/usr/lib" -name libfaketime.so.1 | head -n 1)" \
    FAKETIME_TIMESTAMP_FILE="$WORK/ntp/offset" FAKETIME_NO_CACHE=1 FAKETIME_DONT_FAKE_MONOTONIC=1 \
    "$NTP_TOOLS/usr/sbin/chronyd" -x -d -u root -f "$WORK/ntp/chrony.conf" \
    >> "$WORK/ntp/chronyd.log" 2>&1 &
  NTP_PID=$!
}

# ntp_offset OFFSET: moves the data centre's clock to the host's plus OFFSET (libfaketime's
# syntax: "+3d", "+0") at once, without a restart (a server that is briefly away makes
# timesyncd wait out its connection retry).
ntp_offset() {
  printf '%s\n' "$1" > "$WORK/ntp/offset.new" && mv "$WORK/ntp/offset.new" "$WORK/ntp/offset"
}

# box_clock: the operator's `renkei fleet status --json` of the box; prints "TIME_UNIX
# SYNCHRONIZED CONFIG_VERSION CONFIG_STATE CERT_DAYS_LEFT".
box_clock() {
  local out
  out="$(cd "$HANDOVER" && in_ns "$RENKEI" fleet status --inventory fleet.toml --json --timeout-secs 10 2>&1)" ||
    return 1
  printf '%s\n' "$out" | python3 -c '
import json, sys
text = sys.stdin.read()
doc = json.loads(text[text.index("["):] if text.lstrip().startswith("[") else text[text.index("{"):])
boxes = doc if isinstance(doc, list) else doc.get("boxes", [])
facts = next(b["facts"] for b in boxes if b.get("facts"))
print(facts["time_unix"], str(facts["clock_synchronized"]).lower(), facts["config_version"],
      facts["config_state"], facts["certificate_days_left"])
'
}

# box_refusal: why the box refused the operator's TLS handshake, as `renkei fleet status --json`
# names it (empty when it did not).
box_refusal() {
  local out
  out="$(cd "$HANDOVER" && in_ns "$RENKEI" fleet status --inventory fleet.toml --json --timeout-secs 10 2>&1)"
  printf '%s\n' "$out" | python3 -c '
import json, sys
text = sys.stdin.read()
boxes, _ = json.JSONDecoder().raw_decode(text[text.index("["):])
print(next((b["refused"] for b in boxes if b.get("refused")), ""))
' 2>/dev/null
}

# expect_running VERSION_STATE WHAT: fails with WHAT unless the last box_clock answer says the
# box runs VERSION_STATE ("7 pending").
expect_running() {
  local version state
  read -r _ _ version state _ <<< "$BOX_CLOCK"
  [ "$version $state" = "$1" ] || fail "$2 (box runs: $version $state)"
}

# wait_box_clock OFFSET_SECS WHAT: polls until the box's clock is within CLOCK_TOLERANCE_SECS of
# the host's plus OFFSET_SECS; sets BOX_CLOCK to the last box_clock answer.
wait_box_clock() {
  local deadline=$((SECONDS + CLOCK_STEP_TIMEOUT_SECS)) box_time
  while :; do
    if BOX_CLOCK="$(box_clock)"; then
      box_time="${BOX_CLOCK%% *}"
      if [ $(( box_time - $(date +%s) - $1 )) -le "$CLOCK_TOLERANCE_SECS" ] &&
        [ $(( $(date +%s) + $1 - box_time )) -le "$CLOCK_TOLERANCE_SECS" ]; then
        return 0
      fi
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      cat "$WORK/ntp/chronyd.log" >&2
      ntp_exchanges
      fail "INT-2 the box's clock follows the data centre's NTP server through the SA $2 within $CLOCK_STEP_TIMEOUT_SECS s (box: ${BOX_CLOCK:-no answer}, host: $(date +%s), offset $1 s)"
    fi
    sleep 2
  done
}

# time_version VERSION AUTO_CONFIRM DIR: writes and signs version VERSION of the operator's
# configuration with [time] (the NTP server on the concentrator's tunnel address, polled every
# 16 s), auto_confirm AUTO_CONFIRM and the clock test's confirm window; sets SIGNED_FILE.
time_version() {
  local file="hospital-a-v$1.toml"
  python3 - "$HANDOVER/hospital-a.toml" "$1" "$2" "$CLOCK_CONFIRM_SECS" "$HUB_TUNNEL_ADDRESS" \
    "$HANDOVER/$file" <<'EOF' || fail "INT-2 the operator's configuration version $1 with [time]"
import re, sys
source, version, auto_confirm, window, ntp, out = sys.argv[1:]
text = open(source).read()
meta = text.index("[meta]")
head, tail = text[:meta], text[meta:]
tail, count = re.subn(r"(?m)^version = [0-9]+$", f"version = {version}", tail, count=1)
text, confirm = re.subn(r"(?m)^auto_confirm = (true|false)$", f"auto_confirm = {auto_confirm}", head + tail)
text, windows = re.subn(r"(?m)^confirm_timeout_secs = [0-9]+$", f"confirm_timeout_secs = {window}", text)
if count != 1 or confirm != 1 or windows != 1:
    sys.exit(f"{source}: no single meta.version, auto_confirm or confirm_timeout_secs line")
text += f'\n[time]\nservers = ["{ntp}"]\npoll_min_secs = 16\npoll_max_secs = 16\n'
open(out, "w").write(text)
EOF
  ( cd "$HANDOVER" && "$RENKEI" sign --key operator-signing.key "$file" ) > "$WORK/ntp/sign-$1.log" 2>&1 ||
    { cat "$WORK/ntp/sign-$1.log" >&2; fail "AUTH-4 renkei sign signs configuration version $1"; }
  SIGNED_FILE="$file"
}

# push_version FILE: the operator's push of FILE through the SA; its output in push-clock-*.log.
push_version() {
  ( cd "$HANDOVER" && in_ns "$RENKEI" push --to "$BOX_TUNNEL_ADDRESS:$MANAGEMENT_PORT" \
    --server-name "$BOX_NAME" --cert operator.crt --key operator.key --ca operator-ca.crt \
    --timeout-secs 10 "$1" ) > "$WORK/ntp/push-$1.log" 2>&1 ||
    { cat "$WORK/ntp/push-$1.log" >&2; return 1; }
}

cat > "$HANDOVER/fleet.toml" <<EOF
[operator]
certificate_file = "operator.crt"
private_key_file = "operator.key"
ca_file = "operator-ca.crt"

[[box]]
name = "hospital"
management = "$BOX_TUNNEL_ADDRESS:$MANAGEMENT_PORT"
server_name = "$BOX_NAME"
group = "canary"
EOF
mkdir -p "$WORK/ntp"
in_ns tcpdump -i any -n -U -w "$WORK/ntp/ntp.pcap" udp port 123 > "$WORK/ntp/tcpdump.log" 2>&1 &
CAPTURE_PID=$!
start_ntp
boot c1
fresh_sa || fail "INT-2 the box brings its SA up (boot c1)"

# 1. The box's time comes from the data centre.
synced_version=$((confirmed_version + 1))
time_version "$synced_version" true
push_version "$SIGNED_FILE" || fail "INT-2 the operator pushes version $synced_version with [time] through the SA"
deadline=$((SECONDS + CLOCK_STEP_TIMEOUT_SECS))
until BOX_CLOCK="$(box_clock)" && [[ "$BOX_CLOCK" == *" true $synced_version confirmed "* ]]; do
  [ "$SECONDS" -lt "$deadline" ] ||
    fail "INT-2 with [time] pushed (version $synced_version) the box's clock is synchronized from the data centre's NTP server through the SA (box: ${BOX_CLOCK:-no answer})"
  sleep 2
done
wait_box_clock 0 "at the host's time"
days_then="${BOX_CLOCK##* }"
pass "INT-2,LOG-4 version $synced_version with [time] is confirmed and the box's clock is synchronized from the data centre's NTP server through the SA (box $(cut -d ' ' -f 1 <<< "$BOX_CLOCK"), host $(date +%s); certificate $days_then days left)"

# 2. A push waits for its confirm while the clock jumps 3 days ahead.
pending_version=$((synced_version + 1))
time_version "$pending_version" false
push_version "$SIGNED_FILE" || fail "INT-2 the operator pushes version $pending_version (no auto_confirm) through the SA"
pushed_at=$SECONDS
ntp_offset "+3d"
wait_box_clock 259200 "3 days ahead"
expect_running "$pending_version pending" \
  "INT-2 a clock step of 3 days forward $((SECONDS - pushed_at)) s into a ${CLOCK_CONFIRM_SECS} s confirm window rolls nothing back"
days_left="${BOX_CLOCK##* }"
counted=$(( days_then - days_left ))
if [ "$counted" -lt 2 ] || [ "$counted" -gt 4 ]; then
  fail "INT-2 the box's certificate check counts from its stepped clock (days left: $days_then before, $days_left 3 days later)"
fi
pass "INT-2 the data centre's clock jumped 3 days ahead: the box's clock followed through the SA $((SECONDS - pushed_at)) s into the confirm window, version $pending_version is still pending, and its certificate shows $days_left days left (was $days_then)"

# 3. Back 2 days, still inside the window.
ntp_offset "+1d"
wait_box_clock 86400 "back 2 days"
expect_running "$pending_version pending" \
  "INT-2 a clock step of 2 days back $((SECONDS - pushed_at)) s into a ${CLOCK_CONFIRM_SECS} s confirm window rolls nothing back"
[ $((SECONDS - pushed_at)) -lt "$CLOCK_CONFIRM_SECS" ] ||
  fail "INT-2 both clock steps reached the box within its ${CLOCK_CONFIRM_SECS} s confirm window (the second after $((SECONDS - pushed_at)) s)"
pass "INT-2 the data centre's clock went back 2 days: the box's clock followed $((SECONDS - pushed_at)) s into the confirm window, version $pending_version is still pending"

# 4. The rollback comes when the window ends, by the monotonic clock.
deadline=$((pushed_at + CLOCK_CONFIRM_SECS + 60))
until answer="$(running_config)" && [ "${answer% *}" = "$synced_version confirmed" ]; do
  [ "$SECONDS" -lt "$deadline" ] ||
    fail "INT-2 after two clock steps the unconfirmed version $pending_version is rolled back within 60 s of its ${CLOCK_CONFIRM_SECS} s window (box: ${answer:-no answer})"
  sleep 1
done
rolled_after=$((SECONDS - pushed_at))
[ "$rolled_after" -ge $((CLOCK_CONFIRM_SECS - 3)) ] ||
  fail "INT-2 the rollback of version $pending_version waits for its ${CLOCK_CONFIRM_SECS} s confirm window (it came after $rolled_after s)"
[ "${answer##* }" = "$(sha256sum < "$HANDOVER/hospital-a-v$synced_version.toml" | cut -d ' ' -f 1)" ] ||
  fail "INT-2 the rollback restores byte for byte the operator's version $synced_version"
pass "INT-2 AVL-1 the unconfirmed version $pending_version was rolled back to $synced_version $rolled_after s after its push (window ${CLOCK_CONFIRM_SECS} s), though the box's clock had been stepped 3 days forward and 2 back meanwhile"

# 5. Past the certificates' end: the box refuses the operator, and says why.
ntp_offset "+31d"
stepped_at=$SECONDS
until refusal="$(box_refusal)" && [ "$refusal" = "certificate_expired" ]; do
  if [ $((SECONDS - stepped_at)) -ge "$CLOCK_STEP_TIMEOUT_SECS" ]; then
    (cd "$HANDOVER" && in_ns "$RENKEI" fleet status --inventory fleet.toml --json --timeout-secs 10) >&2 || true
    ntp_exchanges
    fail "INT-2 with the box's clock 31 days ahead, past the operator's certificate, the box refuses the operator's handshake as certificate_expired within $CLOCK_STEP_TIMEOUT_SECS s (refused: ${refusal:-nothing})"
  fi
  sleep 2
done
pass "INT-2 the data centre's clock jumped 31 days ahead, past the end of the operator's 30-day certificate: $((SECONDS - stepped_at)) s later the box refused the operator's handshake and renkei fleet status says certificate_expired (valid by the operator's own clock)"

# 6. Back to the host's time before the next boots.
ntp_offset "+0"
wait_box_clock 0 "back to the host's time"
expect_running "$synced_version confirmed" "INT-2 the clock steps changed nothing the box runs"
pass "INT-2 the data centre's clock is the host's again and the box's clock followed it back: the operator reaches it again, version $synced_version confirmed (box $(cut -d ' ' -f 1 <<< "$BOX_CLOCK"), host $(date +%s))"
confirmed_version=$synced_version
power_off
stop_process "$NTP_PID"
NTP_PID=""
stop_process "$CAPTURE_PID"
CAPTURE_PID=""
