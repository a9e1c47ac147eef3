from broker.api.app import ACMEDNS_ROUTES, ROUTES, build_app, httpreq_routes, routes
from broker.api.context import ApiContext, RegistrationPolicy

__all__ = [
    "ACMEDNS_ROUTES",
    "ROUTES",
    "ApiContext",
    "RegistrationPolicy",
    "build_app",
    "httpreq_routes",
    "routes",
]
