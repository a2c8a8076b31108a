"""The channel's output timing: 48 kHz audio in AAC frames of 1024 samples, and the
video frame counts at which audio and video end at the same instant."""

from __future__ import annotations

from fractions import Fraction

AUDIO_RATE = 48_000
AAC_FRAME = 1024  # samples


def grid_frames(fps: int) -> int:
    """Video frames whose duration is a whole number of AAC frames: an item of a
    multiple of this many frames ends its audio and its video at the same instant."""
    per_frame = Fraction(AUDIO_RATE, fps)
    frames = 1
    while (per_frame * frames) % AAC_FRAME:
        frames += 1
    return frames
