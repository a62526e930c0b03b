"""The one table of dated static prices: EC2 instances (the fallback when the AWS Pricing
API / spot history cannot be read), what else a running node is billed for (EBS, public
IPv4, the S3 request allowance), and SageMaker ``ml.*`` instances.

EC2 instance prices are the fallback used when the AWS Pricing API / spot history cannot be read
(no credentials, no network, throttled, empty answer).

- On-demand figures are AWS's published Linux, shared-tenancy list prices in USD per hour
  as known at STATIC_AS_OF. They change rarely, but they do change: a live answer from the
  Pricing API always wins over this table.
- Spot figures are *typical* recent spot prices (rounded), NOT live quotes. Spot prices move
  by the hour and differ per availability zone; treat them as planning estimates only.
- A type that is missing for a region (e.g. g6 in eu-west-1, which we have no figure for)
  raises PriceError in the price book; pass `--price TYPE=USD` to plan anyway.

The table is a Python module rather than a JSON file so it always ships with the package.
"""

from __future__ import annotations

STATIC_AS_OF = "2025-01-15"

# region -> market -> instance type -> USD per hour
STATIC_PRICES: dict[str, dict[str, dict[str, float]]] = {
    "us-east-1": {
        "on_demand": {
            "g4dn.xlarge": 0.526,
            "g4dn.2xlarge": 0.752,
            "g5.xlarge": 1.006,
            "g5.2xlarge": 1.212,
            "g6.xlarge": 0.8048,
            "g6.2xlarge": 0.9776,
            "p3.2xlarge": 3.06,
            "m6i.xlarge": 0.192,
            "m6i.large": 0.096,
            "m5.xlarge": 0.192,
            "c6i.xlarge": 0.17,
        },
        "spot": {
            "g4dn.xlarge": 0.22,
            "g4dn.2xlarge": 0.32,
            "g5.xlarge": 0.42,
            "g5.2xlarge": 0.52,
            "g6.xlarge": 0.40,
            "g6.2xlarge": 0.50,
            "p3.2xlarge": 0.95,
            "m6i.xlarge": 0.08,
            "m6i.large": 0.04,
            "m5.xlarge": 0.08,
            "c6i.xlarge": 0.07,
        },
    },
    "us-west-2": {
        "on_demand": {
            "g4dn.xlarge": 0.526,
            "g4dn.2xlarge": 0.752,
            "g5.xlarge": 1.006,
            "g5.2xlarge": 1.212,
            "g6.xlarge": 0.8048,
            "g6.2xlarge": 0.9776,
            "p3.2xlarge": 3.06,
            "m6i.xlarge": 0.192,
            "m6i.large": 0.096,
            "m5.xlarge": 0.192,
            "c6i.xlarge": 0.17,
        },
        "spot": {
            "g4dn.xlarge": 0.21,
            "g4dn.2xlarge": 0.31,
            "g5.xlarge": 0.42,
            "g5.2xlarge": 0.52,
            "g6.xlarge": 0.38,
            "g6.2xlarge": 0.48,
            "p3.2xlarge": 0.92,
            "m6i.xlarge": 0.08,
            "m6i.large": 0.04,
            "m5.xlarge": 0.08,
            "c6i.xlarge": 0.07,
        },
    },
    "eu-west-1": {
        "on_demand": {
            "g4dn.xlarge": 0.587,
            "g4dn.2xlarge": 0.838,
            "g5.xlarge": 1.123,
            "g5.2xlarge": 1.353,
            "p3.2xlarge": 3.305,
            "m6i.xlarge": 0.214,
            "m6i.large": 0.107,
            "m5.xlarge": 0.214,
            "c6i.xlarge": 0.192,
        },
        "spot": {
            "g4dn.xlarge": 0.25,
            "g4dn.2xlarge": 0.36,
            "g5.xlarge": 0.47,
            "g5.2xlarge": 0.58,
            "p3.2xlarge": 1.00,
            "m6i.xlarge": 0.09,
            "m6i.large": 0.045,
            "m5.xlarge": 0.09,
            "c6i.xlarge": 0.08,
        },
    },
}


# -- what else a running node is billed for (list prices, us-east-1, as of STATIC_AS_OF) --------

# EBS, USD per GB-month; baseline gp3 IOPS/throughput are included in the GB price.
EBS_USD_PER_GB_MONTH: dict[str, float] = {
    "gp3": 0.08,
    "gp2": 0.10,
    "io1": 0.125,
    "io2": 0.125,
    "st1": 0.045,
    "sc1": 0.015,
    "standard": 0.05,
}
HOURS_PER_MONTH = 730.0
# Every public IPv4 address, in use or not, since 2024-02-01.
PUBLIC_IPV4_USD_PER_HOUR = 0.005
# A stated allowance for S3 requests per node-hour (not measured): 1,000 PUT/LIST
# ($0.005 per 1,000) and 10,000 GET ($0.0004 per 1,000) = $0.009, rounded up.
S3_REQUESTS_USD_PER_NODE_HOUR = 0.01

# -- SageMaker ml.* on-demand list prices for Processing (USD/h), as of STATIC_AS_OF ----------
_ML_US = {
    "ml.g4dn.xlarge": 0.736,
    "ml.g4dn.2xlarge": 1.053,
    "ml.g5.xlarge": 1.408,
    "ml.g5.2xlarge": 1.515,
    "ml.g6.xlarge": 1.1267,
    "ml.m5.xlarge": 0.23,
    "ml.c5.xlarge": 0.204,
}
SAGEMAKER_ON_DEMAND: dict[str, dict[str, float]] = {"us-east-1": _ML_US, "us-west-2": _ML_US}
