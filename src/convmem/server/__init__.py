"""The MCP server: conversation tools over stdio, Streamable HTTP and a WebSocket daemon.

It calls ``Memory`` only; it never reaches into stores or caches.
"""
