"""Small loopback fakes of the cloud APIs the adapters call (stdlib http.server), one module per cloud."""
