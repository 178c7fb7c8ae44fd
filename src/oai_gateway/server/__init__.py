"""The server edge: the HTTP protocol, ASGI types, process set-up."""
