"""The upstream transport: the policy (client.py) over the HTTP/1.1 client."""
