"""Weather plugin: the AutoGPT seed's weather example, written natively."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from plughub.sdk import Context, Plugin, ToolError, tool


class Weather(BaseModel):
    location: str
    temperature: float
    condition: str
    humidity: int | None = None
    source: str


class WeatherPlugin(Plugin):
    """Looks up current conditions."""

    @tool(read_only=True, open_world=True)
    def get_weather(
        self, ctx: Context, location: Annotated[str, Field(max_length=200)]
    ) -> Weather:
        """Get the current weather for a city.

        Args:
            location: City name, optionally with a country code ("Paris,FR").
        """
        if not location.strip():
            raise ToolError("location must not be empty")
        key = ctx.credentials.get("api_key")
        if not key:
            return Weather(
                location=location, temperature=18.0, condition="demo data (no api_key set)",
                source="demo",
            )
        base = str(ctx.settings.get("base_url", "https://api.openweathermap.org")).rstrip("/")
        resp = ctx.http.get(
            f"{base}/data/2.5/weather",
            params={"q": location, "appid": key, "units": ctx.settings.get("units", "metric")},
        )
        if resp.status_code == 404:
            raise ToolError(f"no such place: {location}")
        if resp.status_code != 200:
            raise ToolError(f"weather service answered HTTP {resp.status_code}")
        data = resp.json()
        return Weather(
            location=data.get("name") or location,
            temperature=float(data["main"]["temp"]),
            condition=data["weather"][0]["description"],
            humidity=data["main"].get("humidity"),
            source="openweathermap",
        )
