"""HDHomeRun tuner emulation for Plex, Jellyfin and Emby: device, lineup, device description.

The fields and their JSON types are a real tuner's: Jellyfin reads `HD`, `Favorite` and
`DRM` as numbers (0/1) and the guide fields as strings, imports only `Favorite` channels
when told to, and never those with `DRM`.
"""

from __future__ import annotations

import uuid
from typing import Any
from xml.sax.saxutils import escape

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from service.api.channels import base_url
from service.tuner import (
    DEVICE_AUTH,
    FIRMWARE_NAME,
    FIRMWARE_VERSION,
    MANUFACTURER,
    MODEL_NUMBER,
    tuner_of,
)
from service.types import app_state

UPNP_NAMESPACE = uuid.UUID("8e1f5a6c-6d0b-4d3a-9c1e-6b1f0e5d2a47")


async def discover(request: Request) -> JSONResponse:
    tuner = tuner_of(request)
    url = base_url(request)
    return JSONResponse(
        {
            "FriendlyName": tuner.friendly_name,
            "Manufacturer": MANUFACTURER,
            "ManufacturerURL": url,
            "ModelNumber": MODEL_NUMBER,
            "FirmwareName": FIRMWARE_NAME,
            "FirmwareVersion": FIRMWARE_VERSION,
            "DeviceID": tuner.device_id_text,
            "DeviceAuth": DEVICE_AUTH,
            "BaseURL": url,
            "LineupURL": f"{url}/lineup.json",
            "TunerCount": tuner.tuner_count,
        }
    )


async def lineup(request: Request) -> JSONResponse:
    state = app_state(request)
    hd = int(tuner_of(request).hd)
    url = base_url(request)
    items: list[dict[str, Any]] = [
        {
            "GuideNumber": str(c.number),
            "GuideName": c.config.name,
            "VideoCodec": "H264",
            "AudioCodec": "AAC",
            "HD": hd,
            "Favorite": int(c.config.favorite),
            "DRM": 0,
            "URL": f"{url}/stream/{c.number}.ts",
        }
        for c in state.channels.channels.values()
    ]
    return JSONResponse(items)


async def lineup_status(request: Request) -> JSONResponse:
    return JSONResponse(
        {"ScanInProgress": 0, "ScanPossible": 1, "Source": "Cable", "SourceList": ["Cable"]}
    )


async def lineup_post(request: Request) -> Response:
    """Players ask the tuner to scan; the lineup is the configuration, so there is nothing to do."""
    return Response(status_code=200)


DEVICE_XML = """<?xml version="1.0" encoding="UTF-8"?>
<root xmlns="urn:schemas-upnp-org:device-1-0">
  <specVersion><major>1</major><minor>0</minor></specVersion>
  <URLBase>{url}</URLBase>
  <device>
    <deviceType>urn:schemas-upnp-org:device:MediaServer:1</deviceType>
    <friendlyName>{name}</friendlyName>
    <manufacturer>{manufacturer}</manufacturer>
    <modelName>{model}</modelName>
    <modelNumber>{model}</modelNumber>
    <serialNumber>{device_id}</serialNumber>
    <UDN>uuid:{udn}</UDN>
  </device>
</root>
"""


async def device_xml(request: Request) -> Response:
    tuner = tuner_of(request)
    body = DEVICE_XML.format(
        url=escape(base_url(request)),
        name=escape(tuner.friendly_name),
        manufacturer=MANUFACTURER,
        model=MODEL_NUMBER,
        device_id=tuner.device_id_text,
        # The same device id gives the same UPnP id.
        udn=uuid.uuid5(UPNP_NAMESPACE, tuner.device_id_text),
    )
    return Response(body, media_type="application/xml")
