"""Operators (运营人管理) and login-phone rebinding of upgraded official accounts.

Importing the package registers what it does when an upgrade is cancelled (R-13: pending changes die).
"""

from guanhao.operators import service as _service  # noqa: F401
