"""What the HDHomeRun emulation says about itself, in discover.json, device.xml and the
discovery answer alike."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from starlette.requests import Request

from service import deviceid
from service.config import Settings

# A CONNECT QUATRO: a tuner that does not transcode. Jellyfin takes a model number
# containing "HDTC" for one that does, and then asks for `?transcode=<profile>`.
MODEL_NUMBER = "HDHR5-4US"
FIRMWARE_NAME = "hdhomerun5_atsc"
FIRMWARE_VERSION = "20240101"
MANUFACTURER = "exstream"
DEVICE_AUTH = "exstream"


@dataclass(frozen=True, slots=True)
class Tuner:
    device_id: int
    friendly_name: str
    tuner_count: int
    hd: bool  # the channels' picture is 720 lines or more

    @property
    def device_id_text(self) -> str:
        return deviceid.text(self.device_id)


def tuner_of_settings(settings: Settings) -> Tuner:
    """The tuner `settings` describe; the device id is the configured one, else the one
    kept in the data directory (made there the first time)."""
    hdhomerun = settings.hdhomerun
    configured = None if hdhomerun.device_id is None else deviceid.parse(hdhomerun.device_id)
    device_id = configured or deviceid.kept_device_id(settings.server.data_dir)
    return Tuner(
        device_id=device_id,
        friendly_name=hdhomerun.friendly_name,
        # One process per playing channel, any number of viewers each.
        tuner_count=settings.pool.max_processes,
        hd=settings.ffmpeg.height >= 720,
    )


def tuner_of(request: Request) -> Tuner:
    return cast(Tuner, request.state.tuner)
