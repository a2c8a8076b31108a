#!/bin/sh
# A cheap stand-in for ffmpeg in the storm test: log the spawn, play the recording once, idle.
case "$*" in *exstream_slate=1*) exec cat "$FAKE_FFMPEG_SOURCE" ;; esac
echo "$$ $(date +%s.%N)" >> "$FAKE_FFMPEG_LOG"
cat "$FAKE_FFMPEG_SOURCE"
exec sleep 3600
