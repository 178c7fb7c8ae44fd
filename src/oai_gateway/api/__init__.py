"""The router: transport only (parse, authenticate, resolve, call, render)."""
