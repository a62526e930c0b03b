"""Price book: USD per hour for an EC2 instance type in a region, on-demand or spot.

Where each figure comes from (``Price.source``):

- ``override``      — given by the caller (tests, ``--price TYPE=USD``); always wins.
- ``pricing-api``   — AWS Pricing API ``get_products`` (Linux, shared tenancy, no
  pre-installed software, capacity status Used), read from the public endpoint in
  us-east-1 whatever the region priced.
- ``spot-history``  — EC2 ``describe_spot_price_history`` for ``Linux/UNIX`` over the last
  hour. Spot policy: for each availability zone take its *latest* record (the price in
  force now in that AZ; AWS also returns the record in force at the window's start, so a
  price that has not moved for days is still seen), then take the *maximum* over AZs. The
  autoscaler may launch in any AZ of the cluster's subnets, so the highest current AZ price
  is the conservative figure for a budget.
- ``static:<date>`` — the dated table in ``static_prices.py``, used when the API cannot be
  read (botocore error, no credentials, no network, empty or unparseable answer); a
  warning is logged. Spot figures there are typical, not live.

Spot prices follow the market: a spot figure is re-read every ``spot_refresh_s`` (10 min;
the cache serves it no longer than that either), so the ledger bills each interval at the
price in force (dfray.budget.ledger re-prices running nodes). On-demand figures are kept for
the life of the book. Ages are read from an injectable clock (tests use a ``SimClock``).

Successful API answers are cached as JSON under ``cache_dir`` (default
``~/.cache/dfray/prices``), one file per region, with the fetch time; a cached answer
younger than ``cache_ttl_s`` is served without calling AWS. When AWS cannot be reached, a
stale cached answer is preferred over the static table (its ``as_of`` shows its age).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from dfray.budget.static_prices import STATIC_AS_OF, STATIC_PRICES

log = logging.getLogger(__name__)

MARKETS = ("on_demand", "spot")
PRICING_API_REGION = "us-east-1"  # the Pricing API endpoint; prices any region
DEFAULT_CACHE_DIR = "~/.cache/dfray/prices"
DEFAULT_SPOT_REFRESH_S = 600.0


class PriceError(LookupError):
    """No price could be found for an instance type (no API answer and no static figure)."""


@dataclass(frozen=True)
class Price:
    instance_type: str
    region: str
    market: str  # "on_demand" | "spot"
    usd_per_hour: float
    source: str  # "pricing-api" | "spot-history" | "static:<date>" | "override"
    as_of: str  # ISO timestamp/date of the figure

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _client_config():
    from botocore.config import Config

    # Fail fast when AWS cannot be reached: the static table is a fine answer for a plan.
    return Config(connect_timeout=5, read_timeout=15, retries={"max_attempts": 2})


def _aws_errors() -> tuple[type[BaseException], ...]:
    from botocore.exceptions import BotoCoreError, ClientError

    # KeyError/ValueError/TypeError: an answer whose shape we could not parse.
    return (BotoCoreError, ClientError, KeyError, ValueError, TypeError)


def parse_price_overrides(items: list[str] | None) -> dict[str, float]:
    """Parse ``["g4dn.xlarge=0.2", ...]`` (CLI ``--price``) into ``{type: usd_per_hour}``.

    A key may carry a market, ``g4dn.xlarge:spot=0.2`` / ``g4dn.xlarge:on_demand=0.5``;
    a bare type sets both markets.
    """
    out: dict[str, float] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--price wants TYPE=USD_PER_HOUR, got {item!r}")
        try:
            usd = float(value)
        except ValueError:
            raise ValueError(f"--price {item!r}: {value!r} is not a number") from None
        if not math.isfinite(usd) or usd < 0:
            raise ValueError(f"--price {item!r}: price must be a finite number >= 0")
        itype, _, market = key.partition(":")
        if market:
            market = market.strip().replace("-", "_")
            if market not in MARKETS:
                raise ValueError(f"--price {item!r}: market must be one of {MARKETS}")
            key = f"{itype.strip()}:{market}"
        out[key] = usd
    return out


def parse_price_list(price_list: list[str | dict]) -> float:
    """USD per hour from a Pricing API ``PriceList`` (JSON strings, one per product).

    Reads ``terms.OnDemand.*.priceDimensions.*.pricePerUnit.USD`` for hourly dimensions.
    Several products (rare with our filters) give the highest non-zero price, to stay
    conservative. Raises ValueError when no hourly USD price is present.
    """
    prices: list[float] = []
    for raw in price_list:
        item = json.loads(raw) if isinstance(raw, str) else raw
        on_demand = item.get("terms", {}).get("OnDemand", {})
        for term in on_demand.values():
            for dim in term.get("priceDimensions", {}).values():
                unit = str(dim.get("unit", "Hrs")).lower()
                if unit not in ("hrs", "hours", "hour"):
                    continue
                usd = float(dim["pricePerUnit"]["USD"])
                if usd > 0:
                    prices.append(usd)
    if not prices:
        raise ValueError("PriceList has no hourly on-demand USD price")
    return max(prices)


def pick_spot_price(history: list[dict[str, Any]]) -> tuple[float, str]:
    """(USD per hour, ISO timestamp) from spot price history records.

    Latest record per availability zone, then the maximum over zones (see module doc).
    Raises ValueError when there is no usable Linux/UNIX record.
    """
    latest: dict[str, dict[str, Any]] = {}
    for rec in history:
        if not str(rec.get("ProductDescription", "Linux/UNIX")).startswith("Linux/UNIX"):
            continue
        if float(rec["SpotPrice"]) <= 0:
            continue
        az = rec.get("AvailabilityZone", "?")
        if az not in latest or rec["Timestamp"] > latest[az]["Timestamp"]:
            latest[az] = rec
    if not latest:
        raise ValueError("no Linux/UNIX spot price history")
    best = max(latest.values(), key=lambda r: (float(r["SpotPrice"]), r["Timestamp"]))
    ts = best["Timestamp"]
    return float(best["SpotPrice"]), ts.isoformat() if hasattr(ts, "isoformat") else str(ts)


class PriceBook:
    """Instance prices for one region. See the module docstring for sources and policy."""

    def __init__(
        self,
        region: str,
        *,
        pricing_client: Any = None,
        ec2_client: Any = None,
        cache_dir: str | None = None,
        cache_ttl_s: float = 6 * 3600,
        overrides: dict[str, float] | None = None,
        offline: bool = False,
        spot_refresh_s: float = DEFAULT_SPOT_REFRESH_S,
        clock: Any = None,
    ) -> None:
        if not region:
            raise ValueError("PriceBook needs a region")
        self.region = region
        self._pricing = pricing_client
        self._ec2 = ec2_client
        self.cache_dir = Path(os.path.expanduser(cache_dir or DEFAULT_CACHE_DIR))
        self.cache_ttl_s = float(cache_ttl_s)
        self.overrides = dict(overrides or {})
        self.offline = offline
        self.spot_refresh_s = float(spot_refresh_s)
        self.clock = clock
        self._memo: dict[tuple[str, str], tuple[Price, float]] = {}

    # -- public -------------------------------------------------------------------------

    def on_demand(self, instance_type: str) -> Price:
        return self._get(instance_type, "on_demand")

    def spot(self, instance_type: str) -> Price:
        return self._get(instance_type, "spot")

    def price(self, instance_type: str, spot: bool) -> Price:
        return self._get(instance_type, "spot" if spot else "on_demand")

    # -- lookup chain -------------------------------------------------------------------

    def _get(self, instance_type: str, market: str) -> Price:
        key = (instance_type, market)
        now = self._now()
        if key in self._memo:
            price, at = self._memo[key]
            if market != "spot" or price.source == "override" or now - at < self.spot_refresh_s:
                return price
        price = self._override(instance_type, market)
        if price is None:
            price = self._cached(instance_type, market, fresh_only=True)
        if price is None and not self.offline:
            price = self._from_api(instance_type, market)
        if price is None:
            price = self._cached(instance_type, market, fresh_only=False)
            if price is not None:
                log.warning(
                    "using a stale cached %s price for %s in %s (as of %s)",
                    market,
                    instance_type,
                    self.region,
                    price.as_of,
                )
        if price is None:
            price = self._static(instance_type, market)
        self._memo[key] = (price, now)
        return price

    def _now(self) -> float:
        return self.clock.now() if self.clock is not None else time.time()

    def _override(self, instance_type: str, market: str) -> Price | None:
        for k in (f"{instance_type}:{market}", instance_type):
            if k in self.overrides:
                return Price(
                    instance_type,
                    self.region,
                    market,
                    float(self.overrides[k]),
                    "override",
                    _utcnow().isoformat(timespec="seconds"),
                )
        return None

    def _from_api(self, instance_type: str, market: str) -> Price | None:
        try:
            if market == "on_demand":
                usd = self._fetch_on_demand(instance_type)
                price = Price(
                    instance_type,
                    self.region,
                    market,
                    usd,
                    "pricing-api",
                    _utcnow().isoformat(timespec="seconds"),
                )
            else:
                usd, as_of = self._fetch_spot(instance_type)
                price = Price(instance_type, self.region, market, usd, "spot-history", as_of)
        except _aws_errors() as e:
            api = "Pricing API" if market == "on_demand" else "spot price history"
            log.warning(
                "cannot read the %s for %s in %s (%s: %s); falling back",
                api,
                instance_type,
                self.region,
                type(e).__name__,
                e,
            )
            return None
        self._store(price)
        return price

    def _fetch_on_demand(self, instance_type: str) -> float:
        client = self._pricing
        if client is None:
            import boto3

            client = self._pricing = boto3.client(
                "pricing", region_name=PRICING_API_REGION, config=_client_config()
            )
        filters = [
            ("instanceType", instance_type),
            ("regionCode", self.region),
            ("operatingSystem", "Linux"),
            ("tenancy", "Shared"),
            ("preInstalledSw", "NA"),
            ("capacitystatus", "Used"),
        ]
        kwargs: dict[str, Any] = {
            "ServiceCode": "AmazonEC2",
            "Filters": [{"Type": "TERM_MATCH", "Field": f, "Value": v} for f, v in filters],
            "FormatVersion": "aws_v1",
            "MaxResults": 100,
        }
        price_list: list[str] = []
        while True:
            resp = client.get_products(**kwargs)
            price_list.extend(resp.get("PriceList", []))
            token = resp.get("NextToken")
            if not token:
                break
            kwargs["NextToken"] = token
        return parse_price_list(price_list)

    def _fetch_spot(self, instance_type: str) -> tuple[float, str]:
        client = self._ec2
        if client is None:
            import boto3

            client = self._ec2 = boto3.client(
                "ec2", region_name=self.region, config=_client_config()
            )
        end = _utcnow()
        paginator = client.get_paginator("describe_spot_price_history")
        history: list[dict[str, Any]] = []
        for page in paginator.paginate(
            InstanceTypes=[instance_type],
            ProductDescriptions=["Linux/UNIX"],
            StartTime=end - timedelta(hours=1),
            EndTime=end,
        ):
            history.extend(page.get("SpotPriceHistory", []))
        return pick_spot_price(history)

    def _static(self, instance_type: str, market: str) -> Price:
        table = STATIC_PRICES.get(self.region, {}).get(market, {})
        if instance_type not in table:
            raise PriceError(
                f"no {market} price for {instance_type} in {self.region}: AWS could not be "
                f"read and the static table (as of {STATIC_AS_OF}) has no figure; "
                f"give one with --price {instance_type}=USD_PER_HOUR"
            )
        note = " (typical spot, not live)" if market == "spot" else ""
        # Offline, the static table is what the caller asked for: no need to shout.
        log.log(
            logging.INFO if self.offline else logging.WARNING,
            "using the static %s price for %s in %s: $%.4f/h as of %s%s",
            market,
            instance_type,
            self.region,
            table[instance_type],
            STATIC_AS_OF,
            note,
        )
        return Price(
            instance_type,
            self.region,
            market,
            float(table[instance_type]),
            f"static:{STATIC_AS_OF}",
            STATIC_AS_OF,
        )

    # -- cache --------------------------------------------------------------------------

    @property
    def cache_file(self) -> Path:
        return self.cache_dir / f"{self.region}.json"

    def _read_cache(self) -> dict[str, Any]:
        try:
            data = json.loads(self.cache_file.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _cached(self, instance_type: str, market: str, *, fresh_only: bool) -> Price | None:
        entry = self._read_cache().get(market, {}).get(instance_type)
        if not isinstance(entry, dict):
            return None
        try:
            age = self._now() - float(entry["fetched_at"])
            ttl = (
                min(self.cache_ttl_s, self.spot_refresh_s) if market == "spot" else self.cache_ttl_s
            )
            if fresh_only and not (0 <= age < ttl):
                return None
            return Price(
                instance_type,
                self.region,
                market,
                float(entry["usd_per_hour"]),
                str(entry["source"]),
                str(entry["as_of"]),
            )
        except (KeyError, TypeError, ValueError):
            return None

    def _store(self, price: Price) -> None:
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            data = self._read_cache()
            data.setdefault(price.market, {})[price.instance_type] = {
                "usd_per_hour": price.usd_per_hour,
                "source": price.source,
                "as_of": price.as_of,
                "fetched_at": self._now(),
            }
            from dfray.storage import atomic_path

            with atomic_path(self.cache_file) as tmp, open(tmp, "w") as f:
                json.dump(data, f, indent=1, sort_keys=True)
        except OSError as e:  # a cache we cannot write only costs a later API call
            log.warning("cannot write the price cache %s: %s", self.cache_file, e)
