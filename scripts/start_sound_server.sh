#!/usr/bin/env bash
# Start a private PulseAudio server with a null sink whose monitor is the default input, for
# tests and CI (no sound hardware needed). Idempotent: if the server already answers, do nothing.
#
#   eval "$(scripts/start_sound_server.sh)"    # exports PULSE_SERVER for this shell
#
# Audio played into the sink (e.g. `paplay speech.wav`) comes back on the default input, which
# PortAudio/pyaudio reaches through ALSA's pulse plugin (the "default"/"pulse" ALSA devices).
# Works as root (user mode, no --system) and as a normal user.
set -euo pipefail

DIR="${AFFEDGE_PULSE_DIR:-/tmp/affedge-pulse}"
SOCK="$DIR/native"
SINK="${AFFEDGE_PULSE_SINK:-affedge_null}"
export PULSE_SERVER="unix:$SOCK"

if ! command -v pulseaudio >/dev/null 2>&1; then
    echo "start_sound_server.sh: pulseaudio is not installed (apt-get install pulseaudio pulseaudio-utils)" >&2
    exit 2
fi

if pactl info >/dev/null 2>&1; then
    echo "export PULSE_SERVER=$PULSE_SERVER"
    exit 0
fi

mkdir -p "$DIR"
chmod 700 "$DIR"
cat > "$DIR/server.pa" <<PA
load-module module-native-protocol-unix auth-anonymous=1 socket=$SOCK
load-module module-null-sink sink_name=$SINK rate=48000 channels=2 sink_properties=device.description=affedge-null
set-default-sink $SINK
set-default-source $SINK.monitor
PA

# -n: no default script; -F: ours; no idle exit; no autospawn; logs to a file for debugging.
HOME="$DIR" XDG_RUNTIME_DIR="$DIR" PULSE_RUNTIME_PATH="$DIR" PULSE_STATE_PATH="$DIR" \
    pulseaudio -n -F "$DIR/server.pa" --daemonize=yes --exit-idle-time=-1 --use-pid-file=yes \
    --disallow-exit=no --log-target="file:$DIR/pulse.log" --log-level=notice \
    --disable-shm=yes >/dev/null 2>&1 || true

for _ in $(seq 1 50); do
    if pactl info >/dev/null 2>&1; then
        echo "export PULSE_SERVER=$PULSE_SERVER"
        exit 0
    fi
    sleep 0.1
done
echo "start_sound_server.sh: PulseAudio did not start; see $DIR/pulse.log" >&2
tail -n 20 "$DIR/pulse.log" >&2 2>/dev/null || true
exit 1
