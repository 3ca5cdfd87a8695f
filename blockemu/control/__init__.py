"""The control floor: the HTTP API and /metrics of a served device, and the clients that talk to it.

- :mod:`~blockemu.control.server`: :class:`ControlServer`, one HTTP server per served device;
- :mod:`~blockemu.control.auth`: who may change a device (bearer tokens, remote binding);
- :mod:`~blockemu.control.openapi`: the API's OpenAPI description;
- :mod:`~blockemu.control.metrics`: the Prometheus collector (with the server, the only importers of prometheus_client);
- :mod:`~blockemu.control.client`: the HTTP client, :class:`ControlClient` and :class:`ServedDevice`.

Deliberately empty: ``blockemu ctl`` imports the client alone, which needs
nothing but the standard library, while the server pulls in the runtime and
every device model.
"""
