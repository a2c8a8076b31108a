#!/bin/sh
# A cheap stand-in for ffmpeg in the storm test: log the spawn, then play the recording
# over and over, a little faster than real time (a channel's work-ahead never runs dry).
case "$*" in *exstream_slate=1*) exec cat "$FAKE_FFMPEG_SOURCE" ;; esac
echo "$$ $(date +%s.%N)" >> "$FAKE_FFMPEG_LOG"
while :; do
    cat "$FAKE_FFMPEG_SOURCE"
    sleep 1
done
