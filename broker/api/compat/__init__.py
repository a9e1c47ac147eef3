"""Faces that speak other systems' APIs (acme-dns, lego httpreq), mapped onto the service."""
