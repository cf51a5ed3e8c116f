"""Trust boundaries of the server: API tokens and roles, the audit log.

`roles` is pure (which role each route needs); `auth` checks bearer tokens against the
configured ones and reloads them; `guard` puts both in front of the HTTP routes and the
gRPC methods and writes the audit log of operator actions.
"""
