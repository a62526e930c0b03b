"""Price book: Pricing API (botocore Stubber), spot history (moto), static fallback, cache,
overrides."""

from __future__ import annotations

import datetime as dt
import json

import boto3
import pytest
from botocore.config import Config
from botocore.stub import Stubber

from dfray.budget.prices import (
    PriceBook,
    PriceError,
    parse_price_list,
    parse_price_overrides,
    pick_spot_price,
)
from dfray.budget.static_prices import STATIC_AS_OF, STATIC_PRICES

# A get_products PriceList entry in the shape AWS returns it (one JSON string per product),
# for g4dn.xlarge, Linux, shared tenancy, us-east-1: $0.526/h on demand. The Reserved term
# must be ignored.
G4DN_PRODUCT = {
    "product": {
        "productFamily": "Compute Instance",
        "attributes": {
            "enhancedNetworkingSupported": "Yes",
            "memory": "16 GiB",
            "vcpu": "4",
            "capacitystatus": "Used",
            "locationType": "AWS Region",
            "storage": "1 x 125 NVMe SSD",
            "instanceFamily": "GPU instance",
            "operatingSystem": "Linux",
            "regionCode": "us-east-1",
            "physicalProcessor": "Intel Xeon Family",
            "networkPerformance": "Up to 25 Gigabit",
            "servicename": "Amazon Elastic Compute Cloud",
            "gpuMemory": "16 GiB",
            "instanceType": "g4dn.xlarge",
            "tenancy": "Shared",
            "usagetype": "BoxUsage:g4dn.xlarge",
            "servicecode": "AmazonEC2",
            "licenseModel": "No License required",
            "currentGeneration": "Yes",
            "preInstalledSw": "NA",
            "location": "US East (N. Virginia)",
            "marketoption": "OnDemand",
            "operation": "RunInstances",
            "gpu": "1",
        },
        "sku": "CZMNUFR7XZKPCY6X",
    },
    "serviceCode": "AmazonEC2",
    "terms": {
        "OnDemand": {
            "CZMNUFR7XZKPCY6X.JRTCKXETXF": {
                "priceDimensions": {
                    "CZMNUFR7XZKPCY6X.JRTCKXETXF.6YS6EN2CT7": {
                        "unit": "Hrs",
                        "endRange": "Inf",
                        "description": "$0.526 per On Demand Linux g4dn.xlarge Instance Hour",
                        "appliesTo": [],
                        "rateCode": "CZMNUFR7XZKPCY6X.JRTCKXETXF.6YS6EN2CT7",
                        "beginRange": "0",
                        "pricePerUnit": {"USD": "0.5260000000"},
                    }
                },
                "sku": "CZMNUFR7XZKPCY6X",
                "effectiveDate": "2024-11-01T00:00:00Z",
                "offerTermCode": "JRTCKXETXF",
                "termAttributes": {},
            }
        },
        "Reserved": {
            "CZMNUFR7XZKPCY6X.4NA7Y494T4": {
                "priceDimensions": {
                    "CZMNUFR7XZKPCY6X.4NA7Y494T4.6YS6EN2CT7": {
                        "unit": "Hrs",
                        "description": "Linux/UNIX (Amazon VPC), g4dn.xlarge reserved instance",
                        "pricePerUnit": {"USD": "0.3310000000"},
                    }
                },
                "sku": "CZMNUFR7XZKPCY6X",
                "termAttributes": {"LeaseContractLength": "1yr", "PurchaseOption": "No Upfront"},
            }
        },
    },
    "version": "20241101000000",
    "publicationDate": "2024-11-01T00:00:00Z",
}

EXPECTED_FILTERS = [
    {"Type": "TERM_MATCH", "Field": "instanceType", "Value": "g4dn.xlarge"},
    {"Type": "TERM_MATCH", "Field": "regionCode", "Value": "us-east-1"},
    {"Type": "TERM_MATCH", "Field": "operatingSystem", "Value": "Linux"},
    {"Type": "TERM_MATCH", "Field": "tenancy", "Value": "Shared"},
    {"Type": "TERM_MATCH", "Field": "preInstalledSw", "Value": "NA"},
    {"Type": "TERM_MATCH", "Field": "capacitystatus", "Value": "Used"},
]


@pytest.fixture(autouse=True)
def fake_aws_env(monkeypatch, tmp_path):
    """Fake credentials, no real config files, no instance metadata: nothing reaches AWS."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def pricing_client():
    return boto3.client("pricing", region_name="us-east-1")


def stub_get_products(stubber: Stubber, price_list, *, next_token=None, expected_token=None):
    params = {
        "ServiceCode": "AmazonEC2",
        "Filters": EXPECTED_FILTERS,
        "FormatVersion": "aws_v1",
        "MaxResults": 100,
    }
    if expected_token:
        params["NextToken"] = expected_token
    response = {"FormatVersion": "aws_v1", "PriceList": price_list}
    if next_token:
        response["NextToken"] = next_token
    stubber.add_response("get_products", response, params)


class NoAccess:
    """A client stand-in that fails the test if the price book touches it."""

    def __getattr__(self, name):
        raise AssertionError(f"the price book called AWS ({name}) but should not have")


def test_on_demand_from_pricing_api(tmp_path):
    client = pricing_client()
    with Stubber(client) as stub:
        stub_get_products(stub, [json.dumps(G4DN_PRODUCT)])
        book = PriceBook("us-east-1", pricing_client=client, cache_dir=str(tmp_path))
        price = book.on_demand("g4dn.xlarge")
        stub.assert_no_pending_responses()
    assert price.usd_per_hour == pytest.approx(0.526)
    assert price.source == "pricing-api"
    assert price.market == "on_demand" and price.region == "us-east-1"
    assert price.as_of  # fetch time
    assert book.price("g4dn.xlarge", spot=False) == price  # memoised, no second call


def test_on_demand_paginated(tmp_path):
    other = json.loads(json.dumps(G4DN_PRODUCT))
    other["terms"]["OnDemand"]["CZMNUFR7XZKPCY6X.JRTCKXETXF"]["priceDimensions"][
        "CZMNUFR7XZKPCY6X.JRTCKXETXF.6YS6EN2CT7"
    ]["pricePerUnit"]["USD"] = "0.0000000000"  # a $0 product (e.g. a reservation SKU)
    client = pricing_client()
    with Stubber(client) as stub:
        stub_get_products(stub, [json.dumps(other)], next_token="page2")
        stub_get_products(stub, [json.dumps(G4DN_PRODUCT)], expected_token="page2")
        price = PriceBook("us-east-1", pricing_client=client, cache_dir=str(tmp_path)).on_demand(
            "g4dn.xlarge"
        )
        stub.assert_no_pending_responses()
    assert price.usd_per_hour == pytest.approx(0.526)


def test_parse_price_list_rejects_empty():
    with pytest.raises(ValueError):
        parse_price_list([])


def test_spot_from_moto_history(tmp_path):
    from moto import mock_aws

    with mock_aws():
        ec2 = boto3.client("ec2", region_name="us-east-1")
        # What moto generates for this type, read directly, to compare with.
        records = ec2.describe_spot_price_history(
            InstanceTypes=["g4dn.xlarge"], ProductDescriptions=["Linux/UNIX"]
        )["SpotPriceHistory"]
        assert records, "moto returned no spot price history for g4dn.xlarge"
        book = PriceBook("us-east-1", ec2_client=ec2, cache_dir=str(tmp_path))
        price = book.spot("g4dn.xlarge")
    assert price.source == "spot-history"
    assert price.market == "spot"
    assert price.usd_per_hour == pytest.approx(max(float(r["SpotPrice"]) for r in records))
    assert price.usd_per_hour > 0


def test_spot_policy_latest_per_az_then_max():
    t0 = dt.datetime(2025, 1, 1, 12, 0, tzinfo=dt.timezone.utc)
    hist = [
        # us-east-1a: was 0.50, now 0.20 -> 0.20
        {"AvailabilityZone": "us-east-1a", "SpotPrice": "0.50", "Timestamp": t0,
         "ProductDescription": "Linux/UNIX"},
        {"AvailabilityZone": "us-east-1a", "SpotPrice": "0.20",
         "Timestamp": t0 + dt.timedelta(minutes=30), "ProductDescription": "Linux/UNIX"},
        # us-east-1b: 0.25 -> the highest current AZ price
        {"AvailabilityZone": "us-east-1b", "SpotPrice": "0.25",
         "Timestamp": t0 + dt.timedelta(minutes=10), "ProductDescription": "Linux/UNIX"},
        # not Linux: ignored
        {"AvailabilityZone": "us-east-1c", "SpotPrice": "0.90",
         "Timestamp": t0 + dt.timedelta(minutes=40), "ProductDescription": "Windows"},
    ]  # fmt: skip
    usd, as_of = pick_spot_price(hist)
    assert usd == pytest.approx(0.25)
    assert as_of.startswith("2025-01-01T12:10")
    with pytest.raises(ValueError):
        pick_spot_price([])


def test_spot_empty_history_falls_back_to_static(tmp_path):
    """An empty answer (type not offered) is a fallback, injected with a Stubber."""
    ec2 = boto3.client("ec2", region_name="us-east-1")
    with Stubber(ec2) as stub:
        stub.add_response("describe_spot_price_history", {"SpotPriceHistory": []})
        price = PriceBook("us-east-1", ec2_client=ec2, cache_dir=str(tmp_path)).spot("g5.xlarge")
    assert price.source == f"static:{STATIC_AS_OF}"
    assert price.usd_per_hour == STATIC_PRICES["us-east-1"]["spot"]["g5.xlarge"]


def test_client_error_falls_back_to_static(tmp_path, caplog):
    client = pricing_client()
    with Stubber(client) as stub:
        stub.add_client_error(
            "get_products", service_error_code="AccessDeniedException", http_status_code=403
        )
        with caplog.at_level("WARNING", logger="dfray.budget.prices"):
            price = PriceBook(
                "us-east-1", pricing_client=client, cache_dir=str(tmp_path)
            ).on_demand("g4dn.xlarge")
    assert price.source.startswith("static:")
    assert price.as_of == STATIC_AS_OF
    assert price.usd_per_hour == STATIC_PRICES["us-east-1"]["on_demand"]["g4dn.xlarge"]
    assert "static" in caplog.text and "AccessDenied" in caplog.text
    assert not (tmp_path / "us-east-1.json").exists()  # fallbacks are not cached


def test_endpoint_connection_error_falls_back_to_static(tmp_path):
    # A real client aimed at a closed local port: botocore raises EndpointConnectionError.
    client = boto3.client(
        "pricing",
        region_name="us-east-1",
        endpoint_url="http://127.0.0.1:9",
        config=Config(connect_timeout=1, retries={"max_attempts": 1}),
    )
    price = PriceBook("eu-west-1", pricing_client=client, cache_dir=str(tmp_path)).on_demand(
        "g5.xlarge"
    )
    assert price.source.startswith("static:")
    assert price.usd_per_hour == STATIC_PRICES["eu-west-1"]["on_demand"]["g5.xlarge"]


def test_no_credentials_falls_back_to_static(tmp_path, monkeypatch):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    book = PriceBook("us-west-2", cache_dir=str(tmp_path))  # default boto3 clients
    od, spot = book.on_demand("g6.xlarge"), book.spot("g6.xlarge")
    assert od.source.startswith("static:") and spot.source.startswith("static:")
    assert od.usd_per_hour == STATIC_PRICES["us-west-2"]["on_demand"]["g6.xlarge"]
    assert spot.usd_per_hour < od.usd_per_hour


def test_unknown_type_without_static_figure_raises(tmp_path):
    book = PriceBook("ap-south-1", offline=True, cache_dir=str(tmp_path))
    with pytest.raises(PriceError, match="--price"):
        book.on_demand("g4dn.xlarge")


def test_offline_uses_static_without_touching_aws(tmp_path):
    book = PriceBook(
        "us-east-1",
        pricing_client=NoAccess(),
        ec2_client=NoAccess(),
        offline=True,
        cache_dir=str(tmp_path),
    )
    assert book.spot("g4dn.xlarge").source == f"static:{STATIC_AS_OF}"


def test_cache_serves_second_book_without_aws(tmp_path):
    client = pricing_client()
    with Stubber(client) as stub:
        stub_get_products(stub, [json.dumps(G4DN_PRODUCT)])
        first = PriceBook("us-east-1", pricing_client=client, cache_dir=str(tmp_path)).on_demand(
            "g4dn.xlarge"
        )
    cached = json.loads((tmp_path / "us-east-1.json").read_text())
    assert cached["on_demand"]["g4dn.xlarge"]["usd_per_hour"] == pytest.approx(0.526)
    assert "fetched_at" in cached["on_demand"]["g4dn.xlarge"]

    second = PriceBook(
        "us-east-1", pricing_client=NoAccess(), ec2_client=NoAccess(), cache_dir=str(tmp_path)
    ).on_demand("g4dn.xlarge")
    assert second == first
    assert second.source == "pricing-api"


def test_stale_cache_refetches_then_beats_static(tmp_path):
    client = pricing_client()
    with Stubber(client) as stub:
        stub_get_products(stub, [json.dumps(G4DN_PRODUCT)])
        PriceBook("us-east-1", pricing_client=client, cache_dir=str(tmp_path)).on_demand(
            "g4dn.xlarge"
        )
    # TTL 0: the cached figure is stale, so the book asks AWS; AWS fails; the stale live
    # figure is still better than the static table.
    client = pricing_client()
    with Stubber(client) as stub:
        stub.add_client_error("get_products", service_error_code="ThrottlingException")
        price = PriceBook(
            "us-east-1", pricing_client=client, cache_dir=str(tmp_path), cache_ttl_s=0
        ).on_demand("g4dn.xlarge")
        stub.assert_no_pending_responses()
    assert price.source == "pricing-api"
    assert price.usd_per_hour == pytest.approx(0.526)


def test_overrides_win(tmp_path):
    book = PriceBook(
        "us-east-1",
        pricing_client=NoAccess(),
        ec2_client=NoAccess(),
        cache_dir=str(tmp_path),
        overrides=parse_price_overrides(["g4dn.xlarge=0.2", "g5.xlarge:spot=0.33"]),
    )
    assert book.spot("g4dn.xlarge").usd_per_hour == 0.2
    assert book.on_demand("g4dn.xlarge").usd_per_hour == 0.2
    assert book.spot("g4dn.xlarge").source == "override"
    assert book.price("g5.xlarge", spot=True).usd_per_hour == 0.33
    assert book.price("g5.xlarge", spot=True).source == "override"


def test_parse_price_overrides():
    assert parse_price_overrides(["a.b=1", "c.d:on-demand=2.5"]) == {
        "a.b": 1.0,
        "c.d:on_demand": 2.5,
    }
    for bad in (["x"], ["x=abc"], ["x=-1"], ["x:reserved=1"], ["=1"]):
        with pytest.raises(ValueError):
            parse_price_overrides(bad)


def test_static_table_is_complete_and_sane():
    types = {
        "g4dn.xlarge", "g4dn.2xlarge", "g5.xlarge", "g5.2xlarge", "g6.xlarge", "g6.2xlarge",
        "p3.2xlarge", "m6i.xlarge", "m6i.large", "m5.xlarge", "c6i.xlarge",
    }  # fmt: skip
    assert types <= set(STATIC_PRICES["us-east-1"]["on_demand"])
    assert types <= set(STATIC_PRICES["us-west-2"]["on_demand"])
    for region, markets in STATIC_PRICES.items():
        assert set(markets["spot"]) == set(markets["on_demand"]), region
        for t, od in markets["on_demand"].items():
            assert 0 < markets["spot"][t] < od, (region, t)
