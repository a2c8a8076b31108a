#!/bin/sh
# fake_ffmpeg.py's "ok" for hundreds of channels at once, where as many Python processes
# would take gigabytes: log the spawn as it does, then play the recording over and over,
# a little faster than real time (a channel's work-ahead never runs dry).
case "$*" in
    *-version*) echo "ffmpeg version stand-in (tests/harness/fake_ffmpeg_storm.sh)"; exit 0 ;;
    *"-f null -") exit 0 ;;
    *exstream_slate=1*) exec cat "$FAKE_FFMPEG_SOURCE" ;;
esac
channel=slate
for arg in "$@"; do
    case "$arg" in exstream_channel=*) channel=${arg#exstream_channel=} ;; esac
done
echo "$channel $(date +%s.%N) $$" >> "$FAKE_FFMPEG_LOG"
while :; do
    cat "$FAKE_FFMPEG_SOURCE"
    sleep 1
done
