"""The Python client for Tailor: `from tailor import Client, TailorError`.

    with Client() as client:                      # TAILOR_URL / TAILOR_API_KEY / config file
        ds = client.datasets.upload("news.csv")
        job = client.jobs.wait(client.jobs.create(spec)["id"])
        client.classify("crisis", ["Flood waters rising"])["results"]
"""

from tailor.client import Client
from tailor.connection import Connection
from tailor.errors import JobFailed, TailorError

__all__ = ["Client", "Connection", "JobFailed", "TailorError"]
