"""Open311 GeoReport v2: partner systems and apps file requests into the same intake as a
call (hotline.intake.submit) and follow them. The service layer: the catalogue of services
derived from the dispatch taxonomy (services), filing and reading requests (requests), a
ticket as the spec's request (mapping), client applications and their API keys (clients)
and the POST rate limits (limits). The HTTP layer is web/open311.py."""
