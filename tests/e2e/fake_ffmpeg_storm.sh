#!/bin/sh
# A cheap stand-in for ffmpeg in the storm test: log the spawn, play the recording once, idle.
echo "$$ $(date +%s.%N)" >> "$FAKE_FFMPEG_LOG"
cat "$FAKE_FFMPEG_SOURCE"
exec sleep 3600
