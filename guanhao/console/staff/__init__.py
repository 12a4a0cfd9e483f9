"""The staff console (平台运营后台) under /staff: 数据看板, 审核队列, 自动升级批次, 操作日志, 店铺查询, the policy in
force, API keys and webhook endpoints. Every page reads and acts through the service functions the JSON API's
/admin routes call; a view composes them and holds no query and no rule of its own. Only staff sign in here: a
merchant is refused (403), as a merchant key is on the API's staff paths."""

from guanhao.console.staff import audit_trail, dashboard, platform, review, shops, waves
from guanhao.console.staff.common import router

__all__ = ["audit_trail", "dashboard", "platform", "review", "router", "shops", "waves"]
