"""HDHomeRun tuner emulation for Plex, Jellyfin and Emby: discovery, lineup, device description."""

from __future__ import annotations

import hashlib
from xml.sax.saxutils import escape

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from service.api.channels import base_url
from service.types import app_state


def device_id(request: Request) -> str:
    settings = app_state(request).settings
    digest = hashlib.sha256(str(settings.server.data_dir).encode()).hexdigest()
    return digest[:8].upper()


async def discover(request: Request) -> JSONResponse:
    state = app_state(request)
    url = base_url(request)
    return JSONResponse(
        {
            "FriendlyName": "exstream",
            "Manufacturer": "exstream",
            "ManufacturerURL": url,
            "ModelNumber": "HDTC-2US",
            "FirmwareName": "hdhomeruntc_atsc",
            "FirmwareVersion": "20200101",
            "DeviceID": device_id(request),
            "DeviceAuth": "exstream",
            "BaseURL": url,
            "LineupURL": f"{url}/lineup.json",
            "TunerCount": state.settings.pool.max_processes,
        }
    )


async def lineup(request: Request) -> JSONResponse:
    state = app_state(request)
    url = base_url(request)
    return JSONResponse(
        [
            {
                "GuideNumber": str(c.number),
                "GuideName": c.config.name,
                "URL": f"{url}/stream/{c.number}.ts",
            }
            for c in state.channels.channels.values()
        ]
    )


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
    <friendlyName>exstream</friendlyName>
    <manufacturer>exstream</manufacturer>
    <modelName>HDTC-2US</modelName>
    <modelNumber>HDTC-2US</modelNumber>
    <serialNumber>{device_id}</serialNumber>
    <UDN>uuid:{device_id}</UDN>
  </device>
</root>
"""


async def device_xml(request: Request) -> Response:
    url = escape(base_url(request))
    body = DEVICE_XML.format(url=url, device_id=device_id(request))
    return Response(body, media_type="application/xml")
