"""The HTTP edge (one of the two homes of aiohttp, with ``signer.app``): thin handlers that parse, call one
service and render, one middleware that maps every error to a problem document, and strict body parsing."""
