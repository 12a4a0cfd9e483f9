"""Upgrades (升级): applications, eligibility, account-type quotas, auto-upgrade waves, the official-account record.

Importing the package registers the checks it holds on other domains' changes (R-21).
"""

from guanhao.upgrades import service as _service  # noqa: F401
