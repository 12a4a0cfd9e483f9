"""Fixtures of the operator-change and phone-rebind HTTP tests."""

import pytest

from tests.operators.helpers import T0, upgraded_shop


@pytest.fixture
def shop(api):
    """An upgraded shop, clock frozen at T0, and its merchant's headers."""
    api.set_clock(T0)
    subject_id, shop_id, account_id, holder = upgraded_shop(api)
    return {
        "subject_id": subject_id,
        "shop_id": shop_id,
        "account_id": account_id,
        "holder": holder,
        "merchant": api.merchant(subject_id),
    }
