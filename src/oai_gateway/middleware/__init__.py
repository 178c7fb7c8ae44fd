"""Pure-ASGI middleware: nothing here buffers a body or hides `http.disconnect`."""
