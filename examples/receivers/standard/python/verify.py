"""Verifies one webhookd delivery of a `standard` webhook with the official
`standardwebhooks` library (pip install -r requirements.txt).

Reads one JSON object on stdin:
  {"secret": "whsec_...", "headers": {"webhook-id": "...", ...},
   "body_base64": "<the raw body, base64>", "now": <optional Unix seconds>}
and prints `ok` (exit 0) or `rejected: <the library's error>` (exit 1).
`now` verifies as if the clock said so, to check the library's tolerance.
"""

import base64
import json
import sys
from datetime import datetime, timezone

import standardwebhooks.webhooks as library
from standardwebhooks import Webhook


def pretend_now(seconds):
    """The library reads the clock through its module's `datetime`."""

    class FixedClock(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime.fromtimestamp(seconds, tz=tz or timezone.utc)

    library.datetime = FixedClock


def main():
    request = json.load(sys.stdin)
    if request.get("now") is not None:
        pretend_now(request["now"])
    body = base64.b64decode(request["body_base64"])
    try:
        Webhook(request["secret"]).verify(body, request["headers"])
    except Exception as error:  # the library's WebhookVerificationError and friends
        print(f"rejected: {error}")
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
